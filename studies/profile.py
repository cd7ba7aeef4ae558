"""Where a compiled step spends its work and time, by op category (`run_profile`).

A target is THE train step of a phase (`from_config.train_step`: augmentation,
targets, forward, backward, AdamW) or the cascade forward
(`benchmark.predict_joints`: `inference.predict` from uint8 canvases to joints).
Each is compiled once, timed warm, then run a few times under `jax.profiler`
(the trace stays in the output directory for TensorBoard / Perfetto), and its
optimized HLO is attributed to `CATEGORIES`, independently of the trace format:

  * the units: every instruction that runs as a kernel or thunk (fusions,
    convolutions and their cuDNN / cuBLAS custom calls, gathers, scatters,
    copies, ...), walked from the entry computation through while bodies (× the
    known trip count), calls and conditionals;
  * FLOPs per unit: 2 × multiply-adds of convolutions (padding taps counted) and
    matrix products, one per element of other arithmetic; bytes per unit: its
    operands read plus its result written, slicing ops only what they read (a
    model of memory traffic, not a measurement; XLA's own totals are reported
    beside ours);
  * the category of an instruction comes from the `jax.named_scope`s in its
    `op_name` metadata (`SCOPES`): the library wraps each region at its source
    (`models`: conv layers, `max_pool_2x2`, pyramid and LCN, upscale-and-add,
    `crop_windows`; `augment.augment_batch`; the codecs' `encode`; the train
    step's optimizer update), so renaming code moves nothing between categories.
    `transpose(` in `op_name` marks the backward pass; a convolution or matrix
    product outside every scope is a convolution. A fusion's cost is split over
    the categories of the instructions it fuses (by their element counts),
    except that a fusion holding a convolution or matrix product goes to that
    op's category;
  * time per unit: the profiler's trace (`jax.profiler.ProfileData`): kernel
    events on a GPU's device planes, thunk events on the CPU's threads, matched
    to units by the `hlo_op` they carry or by their name. Where the profiler
    runs command buffers (CUDA graphs) op by op, the traced step is slower than
    the untraced one; both are reported. On the CPU thunks of several threads
    overlap, so shares are of busy time.

`format_markdown` gives a table per target (FLOPs, bytes and time shares per
category) and a summary across targets; the JSON holds the same plus the
heaviest units and the trace events that matched no unit.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from heatpose_jax import from_config
from heatpose_jax.core import fileio, sharding
from heatpose_jax.model import inference
from studies import benchmark

# The op categories, in report order.
CATEGORIES = {
  "conv_forward": "convolutions, forward (with bias or GroupNorm, and ReLU)",
  "conv_backward": "convolutions, backward (input and weight gradients)",
  "pooling": "2×2 max-pooling and its gradient",
  "lcn_pyramid": "input scaling, Gaussian pyramid and LCN",
  "upscale_add": "upscale-and-add of the banks (and its gradient)",
  "crop_gather": "crop windows (gather)",
  "crop_scatter": "crop gradient (scatter-add)",
  "augmentation": "augmentation warp (sampling, warp, joints)",
  "targets": "Gaussian targets (codec encode)",
  "optimizer": "optimizer (clip, AdamW, finite guard)",
  "other": "loss, dropout, argmax and decoding, RNG, copies",
}
# The library's `jax.named_scope`s -> their category ('hp_': no flax module is named so).
# Backward (`transpose(` in op_name): hp_conv is conv_backward, hp_crop crop_scatter.
SCOPES = {
  "hp_conv": "conv_forward",
  "hp_pooling": "pooling",
  "hp_lcn_pyramid": "lcn_pyramid",
  "hp_upscale_add": "upscale_add",
  "hp_crop": "crop_gather",
  "hp_augmentation": "augmentation",
  "hp_targets": "targets",
  "hp_optimizer": "optimizer",
}
TRAIN_TARGETS = ("coarse", "fine", "joint")
TARGETS = (*TRAIN_TARGETS, "cascade")

# Instructions that run no kernel of their own.
_NO_KERNEL = {
  "parameter",
  "constant",
  "tuple",
  "get-tuple-element",
  "bitcast",
  "after-all",
  "partition-id",
  "replica-id",
  "opt-barrier",
  "add-dependency",
  "domain",
}
# Instructions that only move or relabel data: no FLOPs, and no vote in a fusion.
_DATA_MOVEMENT = _NO_KERNEL | {
  "broadcast",
  "reshape",
  "transpose",
  "copy",
  "slice",
  "dynamic-slice",
  "dynamic-update-slice",
  "gather",
  "pad",
  "concatenate",
  "iota",
  "reverse",
  "convert",
  "bitcast-convert",
  "copy-start",
  "copy-done",
}
# Relabelings: no vote when a fusion's cost is split over categories.
_NO_VOTE = _NO_KERNEL | {"reshape", "broadcast", "iota", "convert", "bitcast-convert"}
_SLICING = {"slice", "dynamic-slice", "gather"}
_IN_PLACE = {"dynamic-update-slice", "scatter"}
_ELEMENT_BYTES = {
  "pred": 1,
  "s2": 0.25,
  "u2": 0.25,
  "s4": 0.5,
  "u4": 0.5,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
  "c64": 8,
  "c128": 16,
  "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,<=]*)\]")
_SCOPE = re.compile(r"\bhp_[a-z_]+\b")
# Trace events that wrap others (the CPU's thunk executor): not counted as unmatched.
_WRAPPER = re.compile(r"ThunkExecutor|SlinkyThreadPool|ThreadpoolListener|PjRt|Execute")


# --- the optimized HLO -------------------------------------------------------------


@dataclasses.dataclass
class Instr:
  """One HLO instruction of the optimized module (text form)."""

  name: str
  opcode: str
  shape: str
  operands: list[str]
  attrs: str
  args: str = ""
  op_name: str = ""


@dataclasses.dataclass
class HloModule:
  """The computations of a module and its entry.

  Attributes:
    computations: name -> instructions in order (the last is the root).
    entry: the entry computation's name.
  """

  computations: dict[str, list[Instr]]
  entry: str

  def __post_init__(self):
    self.by_name = {i.name: i for instrs in self.computations.values() for i in instrs}


def _balanced(s: str, start: int) -> int:
  """Index just past the bracket group that opens at `s[start]`."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  depth, quote = 0, False
  for i in range(start, len(s)):
    c = s[i]
    if c == '"' and s[i - 1] != "\\":
      quote = not quote
    elif quote:
      continue
    elif c in pairs:
      depth += 1
    elif c in pairs.values():
      depth -= 1
      if depth == 0:
        return i + 1
  return len(s)


def _split_top(s: str) -> list[str]:
  """`s` split at the commas outside brackets."""
  parts, depth, cur = [], 0, []
  for c in s:
    if c in "({[":
      depth += 1
    elif c in ")}]":
      depth -= 1
    if c == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
    else:
      cur.append(c)
  if cur:
    parts.append("".join(cur))
  return parts


def _parse_instr(line: str) -> Instr | None:
  m = re.match(r"\s*(?:ROOT\s+)?%?([^\s=]+)\s*=\s*", line)
  if not m:
    return None
  pos = m.end()
  if line[pos] == "(":
    end = _balanced(line, pos)
  else:
    end = line.find(" ", pos)
  shape = line[pos:end]
  op = re.match(r"\s*([\w\-]+)\(", line[end:])
  if not op:
    return None
  open_paren = end + op.end() - 1
  close = _balanced(line, open_paren)
  operands = []
  for part in _split_top(line[open_paren + 1 : close - 1]):
    names = re.findall(r"%([\w.\-]+)", part)
    if names:
      operands.append(names[-1])
  attrs = line[close:]
  instr = Instr(m.group(1), op.group(1), shape, operands, attrs, line[open_paren + 1 : close - 1])
  meta = re.search(r'op_name="((?:[^"\\]|\\.)*)"', attrs)
  instr.op_name = meta.group(1) if meta else ""
  return instr


def parse_hlo(text: str) -> HloModule:
  """The optimized module of `jax.stages.Compiled.as_text()` (its stack frame
  tables, outside every computation, are skipped)."""
  computations: dict[str, list[Instr]] = {}
  entry, current = "", None
  for raw in text.splitlines():
    line = re.sub(r"/\*.*?\*/", "", raw)
    stripped = line.strip()
    if current is None:
      if stripped.endswith("{") and "->" in stripped and not line[:1].isspace():
        m = re.match(r"(ENTRY\s+)?%?([^\s(]+)", stripped)
        current = m.group(2)
        computations[current] = []
        if m.group(1):
          entry = current
      continue
    if stripped == "}":
      current = None
      continue
    instr = _parse_instr(line)
    if instr is not None:
      computations[current].append(instr)
  if not entry and computations:
    entry = list(computations)[-1]
  return HloModule(computations, entry)


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
  out = []
  for dtype, dims in _ARRAY.findall(shape):
    dims = tuple(int(d.replace("<=", "")) for d in dims.split(",") if d)
    out.append((dtype, dims))
  return out


def shape_bytes(shape: str, first_only: bool = False) -> float:
  """Bytes of an HLO shape (a tuple: all its arrays, or its first)."""
  arrays = _arrays(shape)[:1] if first_only else _arrays(shape)
  return float(sum(_ELEMENT_BYTES.get(t, 1) * math.prod(d) for t, d in arrays))


def shape_elements(shape: str) -> int:
  """Elements of the first array of an HLO shape."""
  arrays = _arrays(shape)
  return math.prod(arrays[0][1]) if arrays else 0


def _computations_called(instr: Instr) -> list[str]:
  names = []
  keys = ("calls", "to_apply", "body", "condition", "branch_computations")
  for key in (*keys, "true_computation", "false_computation"):
    m = re.search(rf"\b{key}=(\{{[^}}]*\}}|%?[\w.\-]+)", instr.attrs)
    if m:
      names += [n.lstrip("%") for n in re.findall(r"%?([\w.\-]+)", m.group(1))]
  return names


def _is_matmul(instr: Instr) -> bool:
  if instr.opcode in ("convolution", "dot"):
    return True
  if instr.opcode == "custom-call":
    target = re.search(r'custom_call_target="([^"]*)"', instr.attrs)
    t = target.group(1).lower() if target else ""
    return "conv" in t or "gemm" in t or "matmul" in t
  return False


def _operand_shape(module: HloModule, instr: Instr, i: int) -> str:
  if i < len(instr.operands) and instr.operands[i] in module.by_name:
    return module.by_name[instr.operands[i]].shape
  return ""


def _matmul_flops(module: HloModule, instr: Instr) -> float:
  out = shape_elements(instr.shape)
  labels = re.search(r"dim_labels=([\w]+)_([\w]+)->([\w]+)", instr.attrs)
  if labels:  # convolution (or cuDNN's): kernel dims other than 'o' are summed over
    kernel = _arrays(_operand_shape(module, instr, 1))
    if kernel and len(kernel[0][1]) == len(labels.group(2)):
      k = math.prod(d for d, c in zip(kernel[0][1], labels.group(2), strict=True) if c != "o")
      return 2.0 * out * k
    return 2.0 * out
  lhs = _arrays(_operand_shape(module, instr, 0))
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr.attrs)
  dims = [int(d) for d in contracting.group(1).split(",") if d] if contracting else []
  if not contracting:  # cuBLAS: the dimension numbers are in the backend config
    m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instr.attrs)
    dims = [int(d) for d in re.findall(r"\d+", m.group(1))] if m else []
  if lhs and dims:
    return 2.0 * out * math.prod(lhs[0][1][d] for d in dims if d < len(lhs[0][1]))
  return 2.0 * out


def instr_flops(module: HloModule, instr: Instr) -> float:
  """FLOPs of one execution of `instr` (fusions: their fused instructions)."""
  if _is_matmul(instr):
    return _matmul_flops(module, instr)
  if instr.opcode == "fusion":
    return sum(
      instr_flops(module, i) for c in _computations_called(instr) for i in module.computations[c]
    )
  if instr.opcode in _DATA_MOVEMENT:
    return 0.0
  if instr.opcode in ("reduce", "reduce-window", "select-and-scatter"):
    n = shape_elements(_operand_shape(module, instr, 0))
    window = re.search(r"window=\{size=([\dx]+)", instr.attrs)
    size = math.prod(int(v) for v in window.group(1).split("x")) if window else 1
    return float(n if instr.opcode == "reduce" else shape_elements(instr.shape) * size)
  if instr.opcode == "scatter":
    return float(shape_elements(_operand_shape(module, instr, len(instr.operands) - 1)))
  return float(shape_elements(instr.shape))


def instr_bytes(module: HloModule, instr: Instr) -> float:
  """Bytes one execution of a unit reads and writes (see the module docstring)."""
  operand = [_operand_shape(module, instr, i) for i in range(len(instr.operands))]
  if instr.opcode in _SLICING:
    return 2 * shape_bytes(instr.shape) + sum(shape_bytes(s) for s in operand[1:])
  if instr.opcode in _IN_PLACE:
    return 2 * shape_bytes(operand[-1]) + sum(shape_bytes(s) for s in operand[1:-1])
  if instr.opcode == "custom-call" and _is_matmul(instr):  # (result, scratch)
    return sum(shape_bytes(s) for s in operand) + shape_bytes(instr.shape, first_only=True)
  if instr.opcode != "fusion":
    return sum(shape_bytes(s) for s in operand) + shape_bytes(instr.shape)
  fused = module.computations[_computations_called(instr)[0]]
  params = {}
  for i in fused:
    if i.opcode == "parameter":
      params[i.name] = int(i.args) if i.args.strip().isdigit() else len(params)
  users = collections.defaultdict(list)
  for i in fused:
    for o in i.operands:
      users[o].append(i)
  root = fused[-1]
  out = shape_bytes(instr.shape)
  in_place = None
  if root.opcode in _IN_PLACE and root.operands and root.operands[0] in params:
    in_place = params[root.operands[0]]
    out = 2 * shape_bytes(module.by_name[root.operands[-1]].shape)
  total = out
  for name, index in params.items():
    if index == in_place or index >= len(operand):
      continue
    us = users[name]
    if us and all(u.opcode in _SLICING and u.operands[0] == name for u in us):
      total += sum(shape_bytes(u.shape) for u in us)
    else:
      total += shape_bytes(operand[index])
  return total


@dataclasses.dataclass
class Unit:
  """An instruction that runs as a kernel (or thunk), with its cost per call.

  Attributes:
    instr: the instruction.
    count: executions per call of the module (while trip counts).
    flops, bytes: per call (count included).
    weights: category -> fraction of this unit's cost.
    time_ns: traced time per call (0 until `attribute_times`).
  """

  instr: Instr
  count: float
  flops: float
  bytes: float
  weights: dict[str, float] | None
  time_ns: float = 0.0


# --- categories ----------------------------------------------------------------------


@functools.cache
def category(op_name: str, matmul: bool = False, scatter: bool = False) -> str:
  """The category of an HLO instruction from its `op_name` metadata.

  The innermost of the library's scopes (`SCOPES`) in `op_name` decides; with
  none, a convolution or matrix product (`matmul`) is a convolution and anything
  else is 'other'. In the backward pass (`transpose(` in `op_name`) a convolution
  is conv_backward and a crop crop_scatter (as is a crop's scatter).
  """
  scopes = [name for name in _SCOPE.findall(op_name) if name in SCOPES]
  if scopes:
    c = SCOPES[scopes[-1]]
  elif matmul:
    c = "conv_forward"
  else:
    return "other"
  backward = "transpose(" in op_name
  if c == "conv_forward" and backward:
    return "conv_backward"
  if c == "crop_gather" and (backward or scatter):
    return "crop_scatter"
  return c


def classify(instr: Instr) -> str:
  """`category` of one instruction."""
  return category(instr.op_name, _is_matmul(instr), instr.opcode == "scatter")


def _fused(module: HloModule, instr: Instr) -> Iterable[Instr]:
  for c in _computations_called(instr):
    for i in module.computations.get(c, []):
      if i.opcode in ("fusion", "call"):
        yield from _fused(module, i)
      yield i


def _known(instr: Instr) -> str | None:
  """`classify`, or None for an instruction without an op_name (a layout copy)."""
  return classify(instr) if _is_matmul(instr) or instr.op_name else None


def unit_weights(module: HloModule, instr: Instr) -> dict[str, float] | None:
  """category -> share of a unit's cost, None where nothing in it has an op_name.

  A fusion with a convolution or matrix product goes to that op's category;
  other fusions are split by the element counts of the fused instructions that
  compute or move data (relabelings such as bitcasts and broadcasts do not count).
  """
  if instr.opcode != "fusion":
    c = _known(instr)
    return {c: 1.0} if c else None
  fused = list(_fused(module, instr))
  matmuls = [i for i in fused if _is_matmul(i)]
  if matmuls:
    heaviest = max(matmuls, key=lambda i: _matmul_flops(module, i))
    return {classify(heaviest): 1.0}
  votes = collections.Counter()
  for i in fused:
    c = _known(i) if i.opcode not in _NO_VOTE else None
    if c:
      votes[c] += max(shape_elements(i.shape), 1)
  if not votes:
    c = _known(instr)
    return {c: 1.0} if c else None
  total = sum(votes.values())
  return {c: v / total for c, v in votes.items()}


def _resolve_unknown(module: HloModule, units: Sequence[Unit]) -> None:
  """A unit without an op_name (a layout copy or transpose XLA inserted) takes
  the category of the nearest unit that consumes its result, else of the nearest
  that produces its operands (at most 6 steps away); 'other' if none."""
  unit_of = {u.instr.name: u for u in units}
  consumers = collections.defaultdict(list)
  for instrs in module.computations.values():
    for i in instrs:
      for o in i.operands:
        consumers[o].append(i.name)

  def weights_of(name):
    u = unit_of.get(name)
    if u is not None:
      return u.weights
    i = module.by_name.get(name)
    c = _known(i) if i is not None and i.opcode not in _NO_VOTE else None
    return {c: 1.0} if c else None

  def search(start, step):
    frontier, seen = [start], {start}
    for _ in range(6):
      nxt = []
      for name in frontier:
        for n in step(name):
          if n in seen:
            continue
          seen.add(n)
          w = weights_of(n)
          if w:
            return w
          nxt.append(n)
      frontier = nxt
    return None

  def producers(name):
    i = module.by_name.get(name)
    return i.operands if i is not None else []

  for u in units:
    if u.weights is None:
      name = u.instr.name
      u.weights = search(name, consumers.__getitem__) or search(name, producers) or {"other": 1}


def cost_units(module: HloModule) -> list[Unit]:
  """The units of one call of the module (walked from the entry computation)."""
  units = []

  def walk(name: str, count: float, depth: int = 0):
    if depth > 32:
      return
    for instr in module.computations.get(name, []):
      op = instr.opcode
      if op in _NO_KERNEL or op.endswith("-done") or op.endswith("-update"):
        continue
      if op == "while":
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', instr.attrs)
        n = int(trip.group(1)) if trip else 1
        body = re.search(r"\bbody=%?([\w.\-]+)", instr.attrs)
        cond = re.search(r"\bcondition=%?([\w.\-]+)", instr.attrs)
        if body:
          walk(body.group(1), count * n, depth + 1)
        if cond:
          walk(cond.group(1), count * (n + 1), depth + 1)
        continue
      if op in ("call", "conditional", "async-start") or (
        op.endswith("-start") and _computations_called(instr)
      ):
        for c in _computations_called(instr):
          walk(c, count, depth + 1)
        continue
      units.append(
        Unit(
          instr,
          count,
          count * instr_flops(module, instr),
          count * instr_bytes(module, instr),
          unit_weights(module, instr),
        )
      )

  walk(module.entry, 1.0)
  _resolve_unknown(module, units)
  return units


# --- the trace -----------------------------------------------------------------------------


def _norm(name: str) -> str:
  return re.sub(r"[.\-]", "_", name)


def find_xplane(trace_dir: str) -> str:
  """The newest `.xplane.pb` under a `jax.profiler.trace` directory ('' if none)."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  return max(files, key=os.path.getmtime) if files else ""


def _event_lines(profile) -> list:
  """The lines whose events are kernels (a GPU's device streams) or thunks (CPU threads)."""
  planes = list(profile.planes)
  device = [p for p in planes if p.name.startswith("/device:") and "CPU" not in p.name.upper()]
  lines = []
  for plane in device or [p for p in planes if p.name.startswith("/host:CPU")]:
    plane_lines = list(plane.lines)
    ops = [ln for ln in plane_lines if ln.name == "XLA Ops"]
    if ops:  # derived per-op lines where the profiler made them: nothing counted twice
      lines += ops
    elif device:
      lines += [ln for ln in plane_lines if ln.name.startswith("Stream")] or plane_lines
    else:
      lines += [ln for ln in plane_lines if ln.name != "python"]
  return lines


def make_matcher(units: Sequence[Unit]) -> Callable[[str, Sequence[tuple[str, Any]]], Unit | None]:
  """`match(event name, event stats)` -> the unit a trace event ran, or None.

  Tried in order: an `hlo_op` stat; `hlo_op=NAME` inside a stat's text (XLA's
  annotations); the event's name (a CPU thunk's, or a GPU kernel's, where XLA
  names kernels after their fusion with '_' for '.'); any word of the texts.
  """
  by_name = {u.instr.name: u for u in units}
  by_norm = {_norm(n): u for n, u in by_name.items()}

  def lookup(name):
    return by_name.get(name) or by_norm.get(_norm(name))

  def match(name: str, stats: Sequence[tuple[str, Any]]) -> Unit | None:
    texts = [name]
    for key, value in stats:
      if key == "hlo_op" and lookup(str(value)):
        return lookup(str(value))
      if isinstance(value, str):
        texts.append(value)
    for t in texts:
      m = re.search(r"hlo_op=([^,#\s]+)", t)
      if m and lookup(m.group(1)):
        return lookup(m.group(1))
    for t in texts:
      if lookup(t):
        return lookup(t)
      for token in re.split(r"[^\w.\-]+", t):
        if token and lookup(token):
          return lookup(token)
    return None

  return match


def attribute_times(units: Sequence[Unit], xplane: str, calls: int) -> dict[str, Any]:
  """Adds each unit's traced time per call (`calls` calls were traced).

  Returns:
    dict: matched_ns and unmatched_ns per call (wrapper events such as the CPU's
    thunk executor left out), events (matched count), and `unmatched_top`
    (name, ms per call) of the heaviest events that matched no unit.
  """
  match = make_matcher(units)
  profile = jax.profiler.ProfileData.from_file(xplane)
  matched, unmatched, n = 0.0, collections.Counter(), 0
  by_name = {}  # events without stats match by name alone
  for line in _event_lines(profile):
    for ev in line.events:
      stats = list(ev.stats)
      if stats:
        unit = match(ev.name, stats)
      else:
        if ev.name not in by_name:
          by_name[ev.name] = match(ev.name, ())
        unit = by_name[ev.name]
      if unit is None:
        if not _WRAPPER.match(ev.name):
          unmatched[ev.name] += ev.duration_ns
        continue
      unit.time_ns += ev.duration_ns / calls
      matched += ev.duration_ns
      n += 1
  return {
    "matched_ns": matched / calls,
    "unmatched_ns": sum(unmatched.values()) / calls,
    "events": n,
    "unmatched_top": [(name, ns / calls / 1e6) for name, ns in unmatched.most_common(10)],
  }


# --- one target ----------------------------------------------------------------------------


def breakdown(units: Sequence[Unit], timed: bool) -> list[dict[str, Any]]:
  """Per category: flops, bytes, time_ns per call and their shares (each sums to 1)."""
  sums = {c: {"flops": 0.0, "bytes": 0.0, "time_ns": 0.0} for c in CATEGORIES}
  for u in units:
    for c, w in u.weights.items():
      sums[c]["flops"] += w * u.flops
      sums[c]["bytes"] += w * u.bytes
      sums[c]["time_ns"] += w * u.time_ns
  totals = {k: sum(s[k] for s in sums.values()) for k in ("flops", "bytes", "time_ns")}
  rows = []
  for c, s in sums.items():
    row = {"category": c, "label": CATEGORIES[c], **s}
    for k, share in (("flops", "flops_share"), ("bytes", "bytes_share"), ("time_ns", "time_share")):
      row[share] = s[k] / totals[k] if totals[k] > 0 and (timed or k != "time_ns") else None
    rows.append(row)
  return rows


def analyze(hlo_text: str, xplane: str = "", calls: int = 1) -> dict[str, Any]:
  """The category breakdown of an optimized module, timed from a trace when given.

  Returns:
    dict: categories (`breakdown`), totals, units (count), named_scopes
    (whether the HLO carries any of `SCOPES`), top_units (heaviest 25 by time,
    else FLOPs) and, with a trace, `trace` (`attribute_times`).
  """
  module = parse_hlo(hlo_text)
  units = cost_units(module)
  trace = attribute_times(units, xplane, calls) if xplane else None
  timed = bool(trace and trace["matched_ns"] > 0)
  key = (lambda u: u.time_ns) if timed else (lambda u: u.flops)
  top = sorted(units, key=key, reverse=True)[:25]
  scoped = any(_SCOPE.search(i.op_name) for i in module.by_name.values())
  return {
    "categories": breakdown(units, timed),
    "totals": {
      "flops": sum(u.flops for u in units),
      "bytes": sum(u.bytes for u in units),
      "time_ns": sum(u.time_ns for u in units) if timed else None,
    },
    "units": len(units),
    "named_scopes": scoped,
    "top_units": [
      {
        "name": u.instr.name,
        "opcode": u.instr.opcode,
        "categories": {c: round(w, 3) for c, w in u.weights.items()},
        "count": u.count,
        "gflop": u.flops / 1e9,
        "mb": u.bytes / 1e6,
        "us": u.time_ns / 1e3 if timed else None,
        "op_name": u.instr.op_name[-120:],
      }
      for u in top
    ],
    "trace": trace,
  }


def _xla_cost(compiled: jax.stages.Compiled) -> dict[str, float | None]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - not every backend analyses an executable.
    cost = None
  if isinstance(cost, list | tuple):
    cost = cost[0] if cost else None
  cost = cost or {}
  return {"flops": cost.get("flops"), "bytes": cost.get("bytes accessed")}


def _median_ms(call: Callable[[], Any], n: int) -> float:
  times = []
  for _ in range(max(1, n)):
    t = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def _compile(fn, *args) -> tuple[jax.stages.Compiled, float, str]:
  """(compiled, seconds, optimized HLO text); recompiled without the persistent
  cache if an executable loaded from it has no HLO text."""
  jitted = fn if hasattr(fn, "trace") else jax.jit(fn)
  t = time.perf_counter()
  lowered = jitted.trace(*benchmark.abstract_args(args)).lower()
  compiled = lowered.compile()
  seconds = time.perf_counter() - t
  try:
    text = compiled.as_text() or ""
  except Exception:  # noqa: BLE001
    text = ""
  if "ENTRY" not in text:
    previous = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
      text = lowered.compile().as_text() or ""
    finally:
      jax.config.update("jax_enable_compilation_cache", previous)
  return compiled, seconds, text


def _compiled_call(
  config: ml_collections.ConfigDict, target: str, batch_size: int, seed: int
) -> tuple[jax.stages.Compiled, float, str, Callable[[], Any]]:
  """(compiled, compile seconds, optimized HLO, one call) of a target on the first
  device, with random parameters (or state) and inputs of `batch_size`."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  if target == "cascade":
    model = from_config.model(config)
    params = benchmark.random_params(from_config.abstract_params(config, mesh), seed)
    x = jax.device_put(
      np.random.default_rng(seed).integers(0, 256, (batch_size, *config.input_hw, 3), np.uint8),
      mesh.devices.flat[0],
    )
    fn = jax.jit(
      benchmark.predict_joints(model),
      compiler_options=inference.compiler_options(mesh.devices.flat[0].platform),
    )
    compiled, compile_s, text = _compile(fn, params, x)
    return compiled, compile_s, text, lambda: compiled(params, x)
  step_fn = from_config.train_step(config, target, mesh)
  joints = from_config.skeleton(config).num_joints
  batch = sharding.to_global_array(
    benchmark.synthetic_batch(batch_size, tuple(config.input_hw), joints, seed), mesh
  )
  key = jax.device_put(jax.random.key(seed), NamedSharding(mesh, PartitionSpec()))
  held = {"state": benchmark.random_state(from_config.abstract_state(config, mesh), seed)}
  compiled, compile_s, text = _compile(step_fn, held["state"], batch, key)

  def call():  # the state is donated: thread it through
    held["state"], _ = compiled(held["state"], batch, key)
    return held["state"]

  return compiled, compile_s, text, call


def _traced_ms(call: Callable[[], Any], trace_dir: str, calls: int) -> float:
  """Milliseconds per call of `calls` calls under `jax.profiler`, traced to `trace_dir`."""
  t = time.perf_counter()
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0  # Python frames: a larger trace, nothing this report reads
  with jax.profiler.trace(trace_dir, profiler_options=options):
    for _ in range(calls):
      jax.block_until_ready(call())
  return 1e3 * (time.perf_counter() - t) / calls


def profile_target(
  config: ml_collections.ConfigDict,
  target: str,
  *,
  forward_batch: int = 1,
  output_dir: str = "",
  steps: int = 5,
  warmup: int = 2,
  trace: bool = True,
  seed: int = 0,
) -> dict[str, Any]:
  """Compiles, times, traces and attributes one target on the first device.

  Args:
    config: the model and training config (`benchmark.model_config`); its
      dtype and batch_size are the train step's.
    target: a phase of `TRAIN_TARGETS` (THE train step) or 'cascade'
      (`benchmark.predict_joints` at `forward_batch`).
    output_dir: the trace goes to `output_dir/trace_<target>/`, the optimized
      HLO to `output_dir/<target>.hlo.txt` ('' for neither; then no trace).
    steps: untimed-then-timed calls: median of `steps` untraced calls, then
      `steps` traced calls.
    warmup: untimed calls first.
    trace: run the traced calls (else FLOPs and bytes only).

  Returns:
    `analyze`'s dict plus target, batch, dtype, device_kind, compile_s,
    step_ms (untraced median), traced_step_ms, xla (the executable's own cost
    analysis: flops, bytes) and the trace and HLO paths.
  """
  if target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
  batch_size = forward_batch if target == "cascade" else config.batch_size
  compiled, compile_s, text, call = _compiled_call(config, target, batch_size, seed)
  for _ in range(warmup):
    jax.block_until_ready(call())
  step_ms = _median_ms(call, steps)
  xplane, traced_ms, hlo_path = "", None, ""
  if output_dir:
    hlo_path = os.path.join(output_dir, f"{target}.hlo.txt")
    fileio.write_text(hlo_path, text)
  if output_dir and trace:
    trace_dir = os.path.join(output_dir, f"trace_{target}")
    traced_ms = _traced_ms(call, trace_dir, max(1, steps))
    xplane = find_xplane(trace_dir)
  result = analyze(text, xplane, calls=max(1, steps))
  return {
    "target": target,
    "batch": batch_size,
    "dtype": config.dtype,
    "device_kind": jax.devices()[0].device_kind,
    "compile_s": compile_s,
    "step_ms": step_ms,
    "traced_step_ms": traced_ms,
    "xla": _xla_cost(compiled),
    "xplane": xplane,
    "hlo": hlo_path,
    "traced_calls": max(1, steps) if xplane else 0,
    **result,
  }


def run_profile(
  config: ml_collections.ConfigDict,
  targets: Sequence[str],
  *,
  forward_batch: int = 1,
  output_dir: str = "",
  command: str = "",
  steps: int = 5,
  warmup: int = 2,
  trace: bool = True,
) -> dict[str, Any]:
  """`profile_target` of each target; writes `output_dir/profile.{json,md}` after each."""
  h, w = config.input_hw
  report = {
    "device": benchmark.device_info(),
    "command": command,
    "config": f"{config.dataset} {w}x{h}, {config.model.pool_factor}x pooling, "
    f"{from_config.skeleton(config).num_joints} joints, {config.dtype}, "
    f"train batch {config.batch_size}, forward batch {forward_batch}",
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
    "categories": CATEGORIES,
    "targets": [],
  }
  for target in targets:
    t = time.perf_counter()
    r = profile_target(
      config,
      target,
      forward_batch=forward_batch,
      output_dir=output_dir,
      steps=steps,
      warmup=warmup,
      trace=trace,
    )
    r["measure_s"] = time.perf_counter() - t
    report["targets"].append(r)
    print(f"{target}: {summary_line(r)}", flush=True)
    if output_dir and jax.process_index() == 0:
      fileio.write_json(os.path.join(output_dir, "profile.json"), report)
      fileio.write_text(os.path.join(output_dir, "profile.md"), format_markdown(report))
  return report


def reanalyze(directory: str, output_dir: str = "") -> dict[str, Any]:
  """`analyze` again over a finished run's files: `profile.json`, `<target>.hlo.txt`
  and `trace_<target>/` in `directory` (a device call's `traces.tgz` unpacked), so
  that a change to the categories or to the trace matching is checked without the
  device. Writes `profile.{json,md}` to `output_dir` (default `directory`)."""
  with open(os.path.join(directory, "profile.json")) as f:
    report = json.load(f)
  for r in report["targets"]:
    hlo = os.path.join(directory, f"{r['target']}.hlo.txt")
    with open(hlo) as f:
      text = f.read()
    xplane = find_xplane(os.path.join(directory, f"trace_{r['target']}"))
    r.update(analyze(text, xplane, calls=r.get("traced_calls") or 1), hlo=hlo, xplane=xplane)
  out = output_dir or directory
  fileio.write_json(os.path.join(out, "profile.json"), report)
  fileio.write_text(os.path.join(out, "profile.md"), format_markdown(report))
  return report


# --- reporting ------------------------------------------------------------------------------


def _pct(x) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def summary_line(r: dict[str, Any]) -> str:
  """One line: step time, traced time, matched share and the top categories."""
  key = "time_share" if r["totals"]["time_ns"] else "flops_share"
  top = sorted(r["categories"], key=lambda c: c[key] or 0, reverse=True)[:3]
  tops = ", ".join(f"{c['category']} {_pct(c[key])} %" for c in top)
  traced = r["traced_step_ms"]
  return (
    f"{r['step_ms']:.2f} ms/call untraced"
    + (f", {traced:.2f} traced" if traced else "")
    + f", compile {r['compile_s']:.1f} s; by {key.split('_')[0]}: {tops}"
  )


def format_markdown(report: dict[str, Any]) -> str:
  """profile.md: a summary across targets, then a table and the top units per target."""
  info = report["device"]
  lines = [
    "# heatpose_jax profile: where the step goes",
    "",
    f"- date: {info['date']}",
    f"- device: {info['device_kind']} ({info['platform']}); jax {info['jax']}, flax {info['flax']}",
    f"- command: `{report['command']}`",
    f"- config: {report['config']}",
    f"- XLA_FLAGS: `{report.get('xla_flags') or '(none)'}`",
    "- FLOPs and bytes: a model of the optimized HLO's units (studies/profile.py); time: "
    "the profiler's trace, matched to the units (command buffers run op by op while "
    "tracing, so the traced step is slower than the untraced one).",
    "",
  ]
  if report["targets"]:
    lines += _summary_table(report["targets"])
  for r in report["targets"]:
    lines += _target_section(r)
  return "\n".join(lines)


def _summary_table(targets: Sequence[dict[str, Any]]) -> list[str]:
  """Markdown lines: each category's time share (FLOPs share untraced) per target."""
  head = "| category | " + " | ".join(
    f"{r['target']} {'time' if r['totals']['time_ns'] else 'FLOPs'} %" for r in targets
  )
  lines = ["## Summary", "", head + " |", "|---" * (len(targets) + 1) + "|"]
  for c in CATEGORIES:
    cells = []
    for r in targets:
      row = next(x for x in r["categories"] if x["category"] == c)
      cells.append(_pct(row["time_share"] if r["totals"]["time_ns"] else row["flops_share"]))
    lines.append(f"| {c} | " + " | ".join(cells) + " |")
  return lines + [""]


def _target_section(r: dict[str, Any]) -> list[str]:
  """Markdown lines of one target: totals, the category table, the heaviest units."""
  name = "cascade forward" if r["target"] == "cascade" else f"{r['target']} train step"
  tr = r.get("trace") or {}
  matched = tr.get("matched_ns") or 0
  lines = [
    f"## {name} (batch {r['batch']}, {r['dtype']}, {r['device_kind']})",
    "",
    f"- {summary_line(r)}",
    f"- units: {r['units']}; FLOPs {r['totals']['flops'] / 1e9:,.2f} G (XLA: "
    + (f"{r['xla']['flops'] / 1e9:,.2f} G" if r["xla"]["flops"] else "–")
    + f"), bytes {r['totals']['bytes'] / 1e9:,.3f} GB (XLA: "
    + (f"{r['xla']['bytes'] / 1e9:,.3f} GB" if r["xla"]["bytes"] else "–")
    + ")",
  ]
  if tr:
    total = matched + tr["unmatched_ns"]
    lines.append(
      f"- trace: {tr['events']} events matched, {matched / 1e6:.3f} ms per call "
      f"({_pct(matched / total if total else None)} % of traced event time)"
    )
  if not r["named_scopes"]:
    lines.append("- the HLO carries none of the library's named scopes: categories from op kinds")
  lines += [
    "",
    "| category | what | GFLOP | FLOPs % | MB | bytes % | ms | time % |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for c in r["categories"]:
    ms = f"{c['time_ns'] / 1e6:.3f}" if r["totals"]["time_ns"] else "–"
    lines.append(
      f"| {c['category']} | {c['label']} | {c['flops'] / 1e9:,.2f} | {_pct(c['flops_share'])} "
      f"| {c['bytes'] / 1e6:,.1f} | {_pct(c['bytes_share'])} | {ms} | {_pct(c['time_share'])} |"
    )
  lines += ["", "Heaviest units:", "", "| unit | op | categories | GFLOP | MB | µs |"]
  lines.append("|---|---|---|---:|---:|---:|")
  for u in r["top_units"][:10]:
    cats = ", ".join(f"{k} {v:.2f}" if v < 1 else k for k, v in u["categories"].items())
    us = f"{u['us']:.1f}" if u["us"] is not None else "–"
    lines.append(
      f"| {u['name']} | {u['opcode']} | {cats} | {u['gflop']:.3f} | {u['mb']:.2f} | {us} |"
    )
  lines.append("")
  return lines
