"""Speed of the models on the device: training steps, forward latency and
throughput, FLOPs, the matrix-product peak and memory (`run_benchmark`).

The cases (`default_cases`, the performance table: MPII 256×256, 8× pooling,
16 joints, bf16):
  * forward: `inference.predict` (coarse model, argmax, crops, fine model,
    decoding; the one prediction path) at batch 1 and 32, and the coarse model
    alone, timed interleaved call for call, so that fine = the median of the
    per-pair differences (clipped at 0) is measured under the same conditions;
  * train: the real jitted, donated step of `from_config.train_step` (device
    augmentation, targets, forward, backward, AdamW) of the coarse and joint
    phases at batch 64 on random uint8 batches already on the device: what
    training gets, minus the input pipeline; the joint step's compile time;
  * latency: `predict_joints` (`inference.predict` from uint8 canvases to joints
    and scores) compiled ahead of time, timed on a device-resident canvas (AOT),
    through `jax.jit` dispatch, and from a numpy canvas to numpy joints
    (`latency_stats`);
  * cpu: the batch-1 cascade in float32 on the host's CPU cores (what a laptop
    user sees); `cpu_latency_report` adds the `Predictor` path for the full models.

A run may carry a variant name; XLA_FLAGS are recorded with it (XLA reads them when
the backend starts, so each variant is its own process) and `merge_reports`
compares runs case by case, with the input benchmark's rates beside the training
rates (`input_side`). scripts/gpu_benchmark.sh runs it all in one device call.
Every measurement is a JSON-ready dict; the Markdown reports are rendered from
those dicts only (`format_markdown`, `format_merged_markdown`), never read back.

Every function is compiled once and timed warm, inputs on its device. Parameters
are random, filled into `from_config.abstract_state` (no init compile); the work
does not depend on them. FLOPs come from `model_stats.flops` (XLA's cost
analysis of the lowered module, else the analytic count; the source is
reported); achieved TFLOP/s are also given as % of a bf16 (f32 on the CPU)
matrix-product peak measured in the same run. Memory: the compiled executable's
analysis, and the device's peak bytes in use so far (cases run smallest first).
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from heatpose_jax import from_config
from heatpose_jax.core import fileio, sharding
from heatpose_jax.model import inference, model_stats

GIB = 2.0**30


# --- inputs --------------------------------------------------------------------


def model_config(
  name: str, *, pool: int, dtype: str, batch_size: int = 64, tiny: bool = False
) -> ml_collections.ConfigDict:
  """The paper's MPII (256×256, 16 joints) or FLIC (320×240, 7 joints) config;
  `tiny`: the configs' CPU-sized setting (64×64 or 64×48 input, width 1/8)."""
  from heatpose_jax.configs import flic, mpii

  modules = {"flic": flic, "mpii": mpii}
  if name not in modules:
    raise ValueError(f"model must be one of {sorted(modules)}, got {name!r}")
  config = modules[name].get_config(",".join((["tiny"] if tiny else []) + [f"pool={pool}"]))
  config.dtype = dtype
  config.batch_size = batch_size
  from_config.check(config)
  return config


def random_params(abstract_params, seed: int = 0):
  """Arrays shaped and placed as `abstract_params` (`jax.ShapeDtypeStruct`s with
  shardings): kernels LeCun-normal (std 1/√fan-in, fan-in = all axes but the
  last), vectors zero, so activations stay in range in any dtype."""
  rng = np.random.default_rng(seed)

  def one(s):
    x = np.zeros(s.shape, s.dtype)
    if len(s.shape) >= 2:
      x = (rng.standard_normal(s.shape) / math.sqrt(math.prod(s.shape[:-1]))).astype(s.dtype)
    return jax.device_put(x, s.sharding)

  return jax.tree.map(one, abstract_params)


def random_state(abstract_state, seed: int = 0):
  """A `TrainState` filled into `abstract_state`: `random_params`, and zeros for
  the step and the optimizer states (a valid state: fresh Adam moments)."""
  zeros = jax.tree.map(
    lambda s: jax.device_put(np.zeros(s.shape, s.dtype), s.sharding),
    (abstract_state.step, abstract_state.opt_state),
  )
  return abstract_state.replace(
    step=zeros[0], params=random_params(abstract_state.params, seed), opt_state=zeros[1]
  )


def synthetic_batch(
  batch_size: int, input_hw: tuple[int, int], num_joints: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """A random host batch in design.md's layout: uint8 noise images, joints inside
  the central part of the canvas, all annotated and visible."""
  rng = np.random.default_rng(seed)
  h, w = input_hw
  b, j = batch_size, num_joints
  joints = np.stack(
    [rng.uniform(0.25 * w, 0.75 * w, (b, j)), rng.uniform(0.2 * h, 0.8 * h, (b, j))], -1
  )
  box = np.array([0.35 * w, 0.3 * h, 0.65 * w, 0.7 * h], np.float32)
  return {
    "image": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
    "joints": joints.astype(np.float32),
    "joints_valid": np.ones((b, j), np.float32),
    "joints_visible": np.ones((b, j), np.float32),
    "head_size": np.full((b,), 0.1 * h, np.float32),
    "torso_size": np.full((b,), 0.3 * h, np.float32),
    "torso_box": np.tile(box, (b, 1)),
    "canvas_to_image": np.tile(np.eye(2, 3, dtype=np.float32), (b, 1, 1)),
    "index": np.arange(b, dtype=np.int32),
    "_mask": np.ones((b,), bool),
  }


# --- measurements ----------------------------------------------------------------


def abstract_args(tree):
  """`jax.ShapeDtypeStruct`s (with shardings) of a tree of arrays: what `trace` takes."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def compile_fn(fn: Callable, *args) -> dict[str, Any]:
  """Traces, lowers and compiles `jax.jit(fn)` (or a jitted `fn`) for `args`.

  Returns:
    dict: compiled, compile_s (trace + lower + compile), flops, flop_source
    (`model_stats.flops`) and the memory fields of `memory`.
  """
  jitted = fn if hasattr(fn, "trace") else jax.jit(fn)
  t0 = time.perf_counter()
  traced = jitted.trace(*abstract_args(args))
  lowered = traced.lower()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops, source = model_stats.flops(traced, lowered)
  return {
    "compiled": compiled,
    "compile_s": compile_s,
    "flops": flops,
    "flop_source": source,
    **memory(compiled),
  }


def memory(compiled: jax.stages.Compiled) -> dict[str, float]:
  """GiB of the executable's arguments, outputs and scratch (`memory_analysis`),
  NaN where the backend does not say."""
  try:
    m = compiled.memory_analysis()
    return {
      "argument_gib": m.argument_size_in_bytes / GIB,
      "output_gib": (m.output_size_in_bytes - m.alias_size_in_bytes) / GIB,
      "temp_gib": m.temp_size_in_bytes / GIB,
    }
  except Exception:  # noqa: BLE001 - not every backend implements it.
    return {"argument_gib": math.nan, "output_gib": math.nan, "temp_gib": math.nan}


def device_peak_gib(device: jax.Device) -> float:
  """The device's peak bytes in use so far (GiB), NaN where it keeps no count (the CPU)."""
  stats = device.memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return peak / GIB if peak is not None else math.nan


def interleaved_times(
  calls: Sequence[Callable[[int], Any]], *, iters: int, warmup: int
) -> list[list[float]]:
  """Seconds of each of `calls` (given the round's number), timed in turn:
  round r runs call 0, call 1, ... , each timed around `jax.block_until_ready`;
  `warmup` untimed rounds first. Calls of one round see the same clocks, caches
  and neighbours."""
  for r in range(warmup):
    for c in calls:
      jax.block_until_ready(c(r))
  times = [[] for _ in calls]
  for r in range(max(1, iters)):
    for c, ts in zip(calls, times, strict=True):
      t = time.perf_counter()
      jax.block_until_ready(c(r))
      ts.append(time.perf_counter() - t)
  return times


def pair_stats(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
  """Medians of two interleaved series and of their per-pair difference
  `second − first`, clipped at 0 (noise never makes a negative time)."""
  diffs = [max(b - a, 0.0) for a, b in zip(first, second, strict=True)]
  return {
    "first_s": statistics.median(first),
    "second_s": statistics.median(second),
    "difference_s": statistics.median(diffs),
  }


def matmul_peak(n: int, dtype, device: jax.Device, *, iters: int = 10) -> dict[str, Any]:
  """TFLOP/s of an `n`×`n` by `n`×`n` product in `dtype` on `device` (median
  call): the achievable peak that the cases are compared with."""
  rng = np.random.default_rng(0)
  a, b = (
    jax.device_put(rng.standard_normal((n, n), np.float32), device).astype(dtype) for _ in "ab"
  )
  f = jax.jit(jnp.dot)
  (times,) = interleaved_times([lambda r: f(a, b)], iters=iters, warmup=2)
  t = statistics.median(times)
  return {
    "n": n,
    "dtype": jnp.dtype(dtype).name,
    "device": device.device_kind,
    "ms": 1e3 * t,
    "tflops": 2.0 * n**3 / t / 1e12,
  }


def _one_device_model(config, mesh, seed: int, timer: str):
  """(the mesh's one device, the model, random parameters, a numpy generator) of a
  timing that runs on one device (`timer` names it in the error otherwise)."""
  if mesh.devices.size != 1:
    raise ValueError(f"{timer} times one device; the mesh has {mesh.devices.size}")
  model = from_config.model(config)
  params = random_params(from_config.abstract_params(config, mesh), seed)
  return mesh.devices.flat[0], model, params, np.random.default_rng(seed)


def forward_stats(
  config: ml_collections.ConfigDict,
  batch_size: int,
  mesh,
  *,
  parts: Sequence[str] = ("coarse", "cascade"),
  iters: int = 20,
  warmup: int = 2,
  seed: int = 0,
) -> dict[str, float]:
  """Compiles and times the forward pass of `config`'s model on a 1-device mesh.

  'cascade' is `inference.predict` (the prediction path); 'coarse' the coarse
  model's heat-maps. The parts are timed interleaved on 3 rotating random uint8
  input buffers; with both, `fine_ms_per_image` is the median per-pair
  difference (clipped at 0).

  Returns:
    dict: per part `{part}_ms_per_image`, `{part}_ms_per_call`,
    `{part}_gflop_per_image`, `{part}_tflops`, `{part}_compile_s`,
    `{part}_flop_source` and the memory fields; `fine_ms_per_image` with both parts.
  """
  device, model, params, rng = _one_device_model(config, mesh, seed, "forward_stats")
  xs = [
    jax.device_put(rng.integers(0, 256, (batch_size, *config.input_hw, 3), np.uint8), device)
    for _ in range(3)
  ]
  fns = {
    "coarse": lambda p, x: model.apply({"params": p}, x, train=False, method="coarse_heatmaps"),
    "cascade": lambda p, x: inference.predict(model, p, x),
  }
  out, compiled = {}, []
  options = inference.compiler_options(device.platform)
  for part in parts:
    c = compile_fn(jax.jit(fns[part], compiler_options=options), params, xs[0])
    compiled.append(c["compiled"])
    out[f"{part}_compile_s"] = c["compile_s"]
    out[f"{part}_gflop_per_image"] = c["flops"] / batch_size / 1e9
    out[f"{part}_flop_source"] = c["flop_source"]
    for k in ("argument_gib", "output_gib", "temp_gib"):
      out[f"{part}_{k}"] = c[k]
  calls = [lambda r, f=f: f(params, xs[r % len(xs)]) for f in compiled]
  times = interleaved_times(calls, iters=iters, warmup=warmup)
  for part, ts in zip(parts, times, strict=True):
    t = statistics.median(ts)
    out[f"{part}_ms_per_call"] = 1e3 * t
    out[f"{part}_ms_per_image"] = 1e3 * t / batch_size
    out[f"{part}_tflops"] = out[f"{part}_gflop_per_image"] * batch_size / t / 1e3
  if tuple(parts) == ("coarse", "cascade"):
    out["fine_ms_per_image"] = 1e3 * pair_stats(*times)["difference_s"] / batch_size
    out["fine_gflop_per_image"] = out["cascade_gflop_per_image"] - out["coarse_gflop_per_image"]
  out["device_peak_gib"] = device_peak_gib(device)
  return out


def predict_joints(model) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
  """`(params, uint8 canvases (B, H, W, 3)) -> {"joints": (B, J, 2), "scores": (B, J)}`:
  `inference.predict` with what `Predictor` and the exported model return (the
  latency case and the profile's cascade target share it, and so their compiled
  programs in a persistent cache)."""

  def fn(params, canvases):
    out = inference.predict(model, params, canvases)
    return {"joints": out["cascade"], "scores": out["scores"]}

  return fn


def latency_stats(
  config: ml_collections.ConfigDict,
  batch_size: int,
  mesh,
  *,
  iters: int = 50,
  warmup: int = 3,
  predictor: bool = False,
  seed: int = 0,
) -> dict[str, Any]:
  """Latency of the cascade from uint8 canvases to joints, as a deployment runs it.

  The function is `predict_joints` (`inference.predict`), compiled ahead of time
  (`jax.jit(fn).trace(...).lower().compile()`). The ways of calling it are timed
  interleaved on 3 rotating random inputs, on the mesh's one device:
    * aot: the executable on a device-resident canvas (no host round trip);
    * jit: the jitted function on the same canvas (jit's dispatch added);
    * host: a numpy canvas in, numpy joints out through the executable;
    * predictor (with `predictor`): `Predictor(image)` on a canvas-sized uint8
      photograph: letterbox, the jitted `inference.predict`, joints mapped back
      to the image (what a user of the predictor sees).

  Returns:
    dict: `{way}_ms` (median per call), `{way}_p10_ms`, `{way}_p90_ms`,
    gflop_per_image, tflops (aot), compile_s, flop_source, the memory fields
    and device_peak_gib.
  """
  device, model, params, rng = _one_device_model(config, mesh, seed, "latency_stats")
  hosts = [rng.integers(0, 256, (batch_size, *config.input_hw, 3), np.uint8) for _ in range(3)]
  xs = [jax.device_put(h, device) for h in hosts]
  jitted = jax.jit(
    predict_joints(model), compiler_options=inference.compiler_options(device.platform)
  )
  c = compile_fn(jitted, params, xs[0])
  aot = c["compiled"]
  calls = {
    "aot": lambda r: aot(params, xs[r % 3]),
    "jit": lambda r: jitted(params, xs[r % 3]),
    "host": lambda r: jax.device_get(aot(params, jax.device_put(hosts[r % 3], device))),
  }
  first = {}
  if predictor:
    calls["predictor"], first = _predictor_call(config, model, params, hosts, device, batch_size)
  times = interleaved_times(list(calls.values()), iters=iters, warmup=warmup)
  out = {**_way_times(calls, times), **first, "iters": max(1, iters)}
  out["gflop_per_image"] = c["flops"] / batch_size / 1e9
  out["tflops"] = c["flops"] / (out["aot_ms"] / 1e3) / 1e12
  for k in ("compile_s", "flop_source", "argument_gib", "output_gib", "temp_gib"):
    out[k] = c[k]
  out["device_peak_gib"] = device_peak_gib(device)
  return out


def _way_times(ways: Sequence[str], times: Sequence[Sequence[float]]) -> dict[str, float]:
  """`{way}_ms` (the median), `{way}_p10_ms` and `{way}_p90_ms` of each way's seconds."""
  out = {}
  for way, ts in zip(ways, times, strict=True):
    out[f"{way}_ms"] = 1e3 * statistics.median(ts)
    out[f"{way}_p10_ms"] = 1e3 * float(np.percentile(ts, 10))
    out[f"{way}_p90_ms"] = 1e3 * float(np.percentile(ts, 90))
  return out


def _predictor_call(config, model, params, hosts: list[np.ndarray], device, batch_size: int):
  """`Predictor` on `device` for `latency_stats`: round r's call on the photographs
  `hosts[r % 3]` (`(B, H, W, 3)` uint8), and its first calls' seconds.

  Returns:
    the call, and {"predictor_first_call_s": compile included,
    "predictor_first_call_cached_s": a new process's start, in-memory caches
    cleared and the persistent cache kept (NaN without one)}.
  """
  from heatpose_jax import predictor as predictor_lib

  make_predictor = functools.partial(
    predictor_lib.Predictor,
    model,
    params,
    skeleton=from_config.skeleton(config),
    input_hw=tuple(config.input_hw),
    batch_size=batch_size,
  )
  with jax.default_device(device):
    pred = make_predictor()
    images = [list(h) for h in hosts]
    t = time.perf_counter()
    pred(images[0])
    first_call_s = time.perf_counter() - t
    cached_first_call_s = math.nan
    if jax.config.jax_compilation_cache_dir:
      # A new process's start: in-memory caches cleared, the persistent cache kept.
      jax.clear_caches()
      fresh = make_predictor()
      t = time.perf_counter()
      fresh(images[0])
      cached_first_call_s = time.perf_counter() - t
  first_calls = {
    "predictor_first_call_s": first_call_s,
    "predictor_first_call_cached_s": cached_first_call_s,
  }
  return (lambda r: pred(images[r % 3])), first_calls


def train_stats(
  config: ml_collections.ConfigDict,
  phase: str,
  mesh,
  *,
  steps: int = 10,
  repeats: int = 3,
  warmup: int = 2,
  seed: int = 0,
) -> dict[str, float]:
  """Compiles (`from_config.train_step`) and times the train step of `phase`.

  The state is `random_state` over the mesh, one random batch
  (`synthetic_batch`, `config.batch_size` rows) stays on the device. Steps are
  dispatched back to back, as in training; a window's clock stops when its last
  state is ready; the median of `repeats` windows of `steps` steps counts.

  Returns:
    dict: step_ms, images_per_s, gflop_per_image (forward + backward +
    optimizer), tflops, flop_source, compile_s, the memory fields,
    device_peak_gib and the last step's loss.
  """
  b = config.batch_size
  step_fn = from_config.train_step(config, phase, mesh)
  num_joints = from_config.skeleton(config).num_joints
  batch = sharding.to_global_array(
    synthetic_batch(b, tuple(config.input_hw), num_joints, seed), mesh
  )
  key = jax.device_put(jax.random.key(seed), NamedSharding(mesh, PartitionSpec()))
  state = random_state(from_config.abstract_state(config, mesh), seed)
  c = compile_fn(step_fn, state, batch, key)
  compiled, metrics = c.pop("compiled"), None
  for _ in range(warmup):
    state, metrics = compiled(state, batch, key)
  jax.block_until_ready(state)
  windows = []
  for _ in range(max(1, repeats)):
    t = time.perf_counter()
    for _ in range(max(1, steps)):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(state)
    windows.append((time.perf_counter() - t) / max(1, steps))
  step_s = statistics.median(windows)
  gflop = c.pop("flops") / b / 1e9
  return {
    "step_ms": 1e3 * step_s,
    "images_per_s": b / step_s,
    "gflop_per_image": gflop,
    "tflops": gflop * b / step_s / 1e3,
    **c,
    "device_peak_gib": device_peak_gib(mesh.devices.flat[0]),
    "loss": float(jax.device_get(metrics["loss"])) if metrics is not None else math.nan,
  }


# --- the benchmark -----------------------------------------------------------------


def default_cases(
  *,
  forward_batches: Sequence[int] = (1, 32),
  phases: Sequence[str] = ("coarse", "joint"),
  cpu: bool = True,
  latency_batches: Sequence[int] = (),
) -> list[dict[str, Any]]:
  """The performance table's cases, smallest memory first (so that the device's
  peak so far is each case's own): forward at each batch, the latency cases
  (`latency_stats`), the train steps, then the batch-1 cascade on the CPU."""
  cases = [{"section": "forward", "device": "default", "batch": b} for b in forward_batches]
  cases += [{"section": "latency", "device": "default", "batch": b} for b in latency_batches]
  cases += [{"section": "train", "device": "default", "phase": p} for p in phases]
  if cpu:
    cases.append({"section": "forward", "device": "cpu", "batch": 1})
  return cases


def device_info() -> dict[str, Any]:
  """The devices, host and library versions a result was measured with."""
  import flax

  d = jax.devices()[0]
  return {
    "device_kind": d.device_kind,
    "platform": d.platform,
    "num_devices": jax.device_count(),
    "cpu_cores": os.cpu_count(),
    "jax": jax.__version__,
    "flax": flax.__version__,
    "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
  }


def _cpu_device() -> jax.Device | None:
  try:
    return jax.local_devices(backend="cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS without cpu
    return None


def run_benchmark(
  config: ml_collections.ConfigDict,
  cases: Sequence[dict[str, Any]],
  *,
  mesh=None,
  output_dir: str = "",
  command: str = "",
  max_seconds: float = 540.0,
  matmul_size: int = 8192,
  train_steps: int = 10,
  train_repeats: int = 3,
  forward_iters: int = 20,
  latency_iters: int = 50,
  warmup: int = 2,
  forward_parts: Sequence[str] = ("coarse", "cascade"),
  variant: str = "",
  output_name: str = "benchmark",
) -> dict[str, Any]:
  """Measures the matrix-product peaks, then `cases` in order; prints a line per
  case and rewrites `output_dir/{output_name}.{json,md}` after each.

  Args:
    config: the model and training config (`model_config`); its dtype and
      batch_size are the default-device cases'. The CPU case runs it in float32.
    cases: from `default_cases`.
    mesh: the training mesh (default: every device); forward cases use its
      first device, the CPU case the first CPU device.
    output_dir: where the report goes ('' for none).
    command: the command line, quoted in the report.
    max_seconds: a case starts only while the longest case so far still fits.
    matmul_size: side of the peak's matrices (the CPU's: at most 2048).
    train_steps, train_repeats, forward_iters, latency_iters, warmup: see
      `train_stats`, `forward_stats`, `latency_stats`.
    forward_parts: the default device's forward parts (`forward_stats`); the
      CPU case runs the cascade alone.
    variant: a name for this run's settings (`merge_reports` compares variants);
      the report also records XLA_FLAGS, which select most of them.
    output_name: the report's file name, without extension.

  Returns:
    The report: `device` (`device_info`), `peaks` ({"default", "cpu"}:
    `matmul_peak`), `results`, `skipped`, `failed` (each entry its case, its
    measurements and `status`), and the run's settings.
  """
  start = time.perf_counter()
  mesh = sharding.make_mesh() if mesh is None else mesh
  report = _new_report(config, cases, command, variant, max_seconds)
  emit = functools.partial(_emit, report, start, output_dir, output_name)
  meshes = _measure_peaks(report, mesh, cases, matmul_size)
  measure = functools.partial(
    _measure_case,
    train_mesh=mesh,
    train={"steps": train_steps, "repeats": train_repeats, "warmup": warmup},
    latency={"iters": latency_iters, "warmup": warmup},
    forward={"parts": tuple(forward_parts), "iters": forward_iters, "warmup": warmup},
  )
  _run_cases(config, cases, meshes, report["peaks"], measure, emit, start, max_seconds)
  _write(report, start, output_dir, output_name)
  return report


def _new_report(config, cases, command: str, variant: str, max_seconds: float) -> dict[str, Any]:
  """`run_benchmark`'s report before any measurement: the device, the run's settings
  and empty `peaks`, `results`, `skipped`, `failed`."""
  h, w = config.input_hw
  return {
    "device": device_info(),
    "command": command,
    "config": f"{config.dataset} {w}x{h}, {config.model.pool_factor}x pooling, "
    f"{from_config.skeleton(config).num_joints} joints, {config.dtype}, "
    f"train batch {config.batch_size}",
    "compilation_cache": jax.config.jax_compilation_cache_dir or "",
    "variant": variant,
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
    "max_seconds": max_seconds,
    "cases": list(cases),
    "peaks": {},
    "results": [],
    "skipped": [],
    "failed": [],
  }


def _write(report: dict[str, Any], start: float, output_dir: str, output_name: str) -> None:
  """Stamps the seconds since `start` and rewrites `output_dir/{output_name}.{json,md}`
  (process 0; no files for `output_dir` '')."""
  report["elapsed_s"] = time.perf_counter() - start
  if output_dir and jax.process_index() == 0:
    fileio.write_json(os.path.join(output_dir, f"{output_name}.json"), report)
    fileio.write_text(os.path.join(output_dir, f"{output_name}.md"), format_markdown(report))


def _emit(report, start, output_dir, output_name, entry: dict[str, Any], status: str) -> None:
  """Files `entry` under `report[status]` ('results', 'skipped' or 'failed'), prints
  its line and rewrites the report (`_write`)."""
  entry["status"] = status
  report[status].append(entry)
  print(f"[{time.perf_counter() - start:6.1f} s] {case_line(entry)}", flush=True)
  _write(report, start, output_dir, output_name)


def _measure_peaks(report: dict[str, Any], mesh, cases, matmul_size: int) -> dict[str, Any]:
  """Measures and prints the matrix-product peaks into `report["peaks"]`: bf16 on the
  mesh's first device, f32 on the first CPU device when a case runs there.

  Returns:
    {"default": that first device's mesh, "cpu": the CPU's (when measured)}.
  """
  first = mesh.devices.flat[0]
  cpu = _cpu_device()
  meshes = {"default": sharding.make_mesh([first])}
  report["peaks"]["default"] = matmul_peak(matmul_size, jnp.bfloat16, first)
  if cpu is not None and any(c["device"] == "cpu" for c in cases):
    meshes["cpu"] = sharding.make_mesh([cpu])
    report["peaks"]["cpu"] = matmul_peak(min(matmul_size, 2048), jnp.float32, cpu)
  for name, p in report["peaks"].items():
    print(f"matrix-product peak ({name}, {p['dtype']} {p['n']}): {p['tflops']:.2f} TFLOP/s")
  return meshes


def _run_cases(config, cases, meshes, peaks, measure, emit, start: float, max_seconds: float):
  """Measures `cases` in order (the CPU's in float32) and emits each: skipped once
  the longest case so far no longer fits in `max_seconds` since `start` (or without
  its device), failed with the error it raised, else its results and % of peak."""
  cpu_config = ml_collections.ConfigDict(config.to_dict())
  cpu_config.dtype = "float32"
  h, w = config.input_hw
  longest = 0.0
  for case in cases:
    used = time.perf_counter() - start
    if used + longest > max_seconds:
      emit(dict(case, reason=f"budget: {used:.0f} of {max_seconds:.0f} s used"), "skipped")
      continue
    if case["device"] not in meshes:
      emit(dict(case, reason="no CPU backend (JAX_PLATFORMS)"), "skipped")
      continue
    cfg = cpu_config if case["device"] == "cpu" else config
    entry = dict(case, model=cfg.model.variant, input=f"{w}x{h}", pool=cfg.model.pool_factor)
    entry.update(joints=from_config.skeleton(cfg).num_joints, dtype=cfg.dtype)
    entry["device_kind"] = meshes[case["device"]].devices.flat[0].device_kind
    if case["section"] == "train":
      entry["batch"] = cfg.batch_size
    t = time.perf_counter()
    try:
      stats, tflops = measure(case, cfg, meshes[case["device"]])
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: report the case and go on.
      emit(dict(entry, error=f"{type(e).__name__}: {e}"[:500]), "failed")
      continue
    finally:
      longest = max(longest, time.perf_counter() - t)
    entry.update(stats)
    entry["peak_percent"] = 100 * tflops / peaks[case["device"]]["tflops"]
    entry["measure_s"] = time.perf_counter() - t
    emit(entry, "results")


def _measure_case(case, cfg, case_mesh, *, train_mesh, train, latency, forward):
  """One case's measurements and its achieved TFLOP/s: `train_stats` on the training
  mesh, `latency_stats` (with the `Predictor` path on the CPU) or `forward_stats`
  (the cascade alone on the CPU) on the case's device, with these settings."""
  if case["section"] == "train":
    stats = train_stats(cfg, case["phase"], train_mesh, **train)
    return stats, stats["tflops"]
  if case["section"] == "latency":
    stats = latency_stats(
      cfg, case["batch"], case_mesh, **latency, predictor=case["device"] == "cpu"
    )
    return stats, stats["tflops"]
  if case["device"] == "cpu":
    forward = {**forward, "parts": ("cascade",)}
  stats = forward_stats(cfg, case["batch"], case_mesh, **forward)
  return stats, stats["cascade_tflops"]


# --- reporting ---------------------------------------------------------------------


def _f(x, digits: int) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def _g(x) -> str:
  """3 significant digits (TFLOP/s: from 0.00123 on a tiny CPU case to 312 on a GPU)."""
  return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def case_line(entry: dict[str, Any]) -> str:
  """One line describing a finished, skipped or failed case."""
  what = f"{entry['section']} on {entry['device']}"
  what += f" {entry['phase']}" if entry["section"] == "train" else f" batch {entry['batch']}"
  if entry["status"] == "skipped":
    return f"{what}: skipped ({entry['reason']})"
  if entry["status"] == "failed":
    return f"{what}: FAILED {entry['error']}"
  if entry["section"] == "latency":
    pred = entry.get("predictor_ms")
    return (
      f"{what}: AOT {_f(entry['aot_ms'], 3)} ms/call (p90 {_f(entry['aot_p90_ms'], 3)}), "
      f"jit {_f(entry['jit_ms'], 3)}, host canvas {_f(entry['host_ms'], 3)}"
      + (f", Predictor {_f(pred, 1)}" if pred is not None else "")
      + f" ms, compile {entry['compile_s']:.1f} s"
    )
  if entry["section"] == "train":
    return (
      f"{what}: {_f(entry['step_ms'], 2)} ms/step, {_f(entry['images_per_s'], 1)} img/s, "
      f"{_f(entry['gflop_per_image'], 1)} GFLOP/img ({entry['flop_source']}), "
      f"{_g(entry['tflops'])} TFLOP/s ({_f(entry['peak_percent'], 0)} % of peak), "
      f"compile {entry['compile_s']:.1f} s"
    )
  fine = entry.get("fine_ms_per_image")
  return (
    f"{what}: cascade {_f(entry['cascade_ms_per_image'], 3)} ms/img"
    + (
      f" (coarse {_f(entry['coarse_ms_per_image'], 3)}, fine {_f(fine, 3)})"
      if fine is not None
      else ""
    )
    + f", {_g(entry['cascade_tflops'])} TFLOP/s ({_f(entry['peak_percent'], 0)} % of peak), "
    f"compile {entry['cascade_compile_s']:.1f} s"
  )


def format_markdown(report: dict[str, Any]) -> str:
  """benchmark.md: the header, the matrix-product peaks, one table per section."""
  lines = _markdown_header(report)
  results = report["results"]
  trains = [r for r in results if r["section"] == "train"]
  if trains:
    lines += _table(
      [
        "## Training step (`from_config.train_step`: augmentation, targets, forward, backward, "
        "AdamW; no input pipeline)"
      ],
      "| model | input (W×H) | J | pool | phase | dtype | batch | ms/step | img/s | GFLOP/img "
      "| TFLOP/s | % of peak | FLOPs from | args + temp GiB | device peak GiB | compile s | loss |",
      [_train_row(r) for r in trains],
    )
  forwards = [r for r in results if r["section"] == "forward"]
  if forwards:
    lines += _table(
      ["## Forward (`inference.predict`; fine = median per-pair cascade − coarse, clipped at 0)"],
      "| device | model | input (W×H) | pool | dtype | batch | coarse ms/img | fine ms/img "
      "| cascade ms/img | cascade GFLOP/img | cascade TFLOP/s | % of peak | FLOPs from "
      "| args + temp GiB | device peak GiB | compile s (cascade) |",
      [_forward_row(r) for r in forwards],
    )
  latencies = [r for r in results if r["section"] == "latency"]
  if latencies:
    lines += _table(
      [
        "## Latency (AOT-compiled `inference.predict` from uint8 canvases to joints; "
        f"median of {latencies[0].get('iters', '?')} calls)",
        "",
        "- AOT: the compiled executable on a device-resident canvas; jit: the jitted "
        "function (its dispatch added); host: a numpy canvas in, numpy joints out; "
        "Predictor: `Predictor(image)` (letterbox and mapping back added).",
      ],
      "| device | model | input (W×H) | pool | dtype | batch | AOT ms | AOT p10–p90 ms "
      "| jit ms | host ms | Predictor ms | GFLOP/img | TFLOP/s | compile s |",
      [_latency_row(r) for r in latencies],
    )
  for kind in ("skipped", "failed"):
    if report.get(kind):
      lines += [f"## {kind.capitalize()}", ""]
      lines += [f"- {case_line(e)}" for e in report[kind]]
      lines.append("")
  return "\n".join(lines)


def _markdown_header(report: dict[str, Any]) -> list[str]:
  """benchmark.md's title and bullet points: the run, the peaks, the FLOP sources."""
  info = report["device"]
  lines = [
    "# heatpose_jax benchmark",
    "",
    f"- date: {info['date']}",
    f"- device: {info['device_kind']} × {info['num_devices']} ({info['platform']}); "
    f"host: {info['cpu_cores']} CPU cores",
    f"- jax {info['jax']}, flax {info['flax']}",
    f"- command: `{report['command']}`",
    f"- config: {report['config']}",
    f"- variant: {report.get('variant') or '(none)'}; XLA_FLAGS: "
    f"`{report.get('xla_flags') or '(none)'}`",
    f"- persistent compilation cache: {report['compilation_cache'] or 'off'} "
    "(compile times are cold only when off)",
    f"- total {report.get('elapsed_s', math.nan):.0f} s of a {report['max_seconds']:.0f} s budget",
  ]
  for name, p in report["peaks"].items():
    lines.append(
      f"- matrix-product peak ({name}): {p['dtype']} {p['n']}×{p['n']}, {p['device']}: "
      f"{_g(p['tflops'])} TFLOP/s (the '% of peak' reference)"
    )
  return lines + [
    "- FLOPs from: 'xla' = XLA's cost analysis of the lowered module, 'analytic' = "
    "convolutions and matrix products of the jaxpr (`heatpose_jax.model.model_stats`).",
    "",
  ]


def _table(title: list[str], header: str, rows: list[str]) -> list[str]:
  """A Markdown section: `title` lines, the table (`header`, its rule, `rows`), a blank."""
  rule = "|" + "---|" * (header.count("|") - 1)
  return [*title, "", header, rule, *rows, ""]


def _train_row(r: dict[str, Any]) -> str:
  return (
    f"| {r['model']} | {r['input']} | {r['joints']} | {r['pool']}x | {r['phase']} "
    f"| {r['dtype']} | {r['batch']} | {_f(r['step_ms'], 2)} | {_f(r['images_per_s'], 1)} "
    f"| {_f(r['gflop_per_image'], 2)} | {_g(r['tflops'])} | {_f(r['peak_percent'], 1)} "
    f"| {r['flop_source']} | {_g(r['argument_gib'] + r['temp_gib'])} "
    f"| {_g(r['device_peak_gib'])} | {_f(r['compile_s'], 1)} | {_f(r['loss'], 4)} |"
  )


def _forward_row(r: dict[str, Any]) -> str:
  return (
    f"| {r['device_kind']} | {r['model']} | {r['input']} | {r['pool']}x | {r['dtype']} "
    f"| {r['batch']} | {_f(r.get('coarse_ms_per_image'), 3)} "
    f"| {_f(r.get('fine_ms_per_image'), 3)} | {_f(r['cascade_ms_per_image'], 3)} "
    f"| {_f(r['cascade_gflop_per_image'], 2)} | {_g(r['cascade_tflops'])} "
    f"| {_f(r['peak_percent'], 1)} | {r['cascade_flop_source']} "
    f"| {_g(r['cascade_argument_gib'] + r['cascade_temp_gib'])} "
    f"| {_g(r['device_peak_gib'])} | {_f(r['cascade_compile_s'], 1)} |"
  )


def _latency_row(r: dict[str, Any]) -> str:
  return (
    f"| {r['device_kind']} | {r['model']} | {r['input']} | {r['pool']}x | {r['dtype']} "
    f"| {r['batch']} | {_f(r['aot_ms'], 3)} "
    f"| {_f(r['aot_p10_ms'], 3)}–{_f(r['aot_p90_ms'], 3)} | {_f(r['jit_ms'], 3)} "
    f"| {_f(r['host_ms'], 3)} | {_f(r.get('predictor_ms'), 3)} "
    f"| {_f(r['gflop_per_image'], 2)} | {_g(r['tflops'])} | {_f(r['compile_s'], 1)} |"
  )


# --- variants, the input side and the CPU latency ------------------------------------


def case_key(entry: dict[str, Any]) -> str:
  """A case's name across variants, e.g. 'train joint b64', 'latency default b1'."""
  if entry["section"] == "train":
    return f"train {entry['phase']} b{entry.get('batch', '?')}"
  return f"{entry['section']} {entry['device']} b{entry['batch']}"


# (label, key, digits) of each section's headline numbers in the comparison.
HEADLINES = {
  "train": (("img/s", "images_per_s", 1), ("ms/step", "step_ms", 2), ("compile s", "compile_s", 1)),
  "forward": (
    ("cascade ms/img", "cascade_ms_per_image", 3),
    ("coarse ms/img", "coarse_ms_per_image", 3),
  ),
  "latency": (("AOT ms", "aot_ms", 3), ("jit ms", "jit_ms", 3), ("compile s", "compile_s", 1)),
}


def input_side(measured: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
  """The input benchmark's rates (`input_benchmark.measure`, its input.json) against
  the training rates of `report`: the best `make_dataset` rate per data, from
  JPEGs and from the canvas cache, and whether JPEG decoding keeps up with the
  cascade (joint phase) training rate."""
  best_jpeg, best_cache = {}, {}
  for r in measured["rows"]:
    if r["what"].startswith("make_dataset"):
      best = best_cache if "cache" in r["what"] else best_jpeg
      best[r["data"]] = max(best.get(r["data"], 0.0), r["img_s"])
  trains = {
    e["phase"]: e["images_per_s"]
    for e in (report or {}).get("results", [])
    if e["section"] == "train"
  }
  need = trains.get("joint")
  return {
    "best_jpeg_img_s": best_jpeg,
    "best_cache_img_s": best_cache,
    "train_img_s": trains,
    "jpeg_keeps_up_with_joint": None
    if need is None or not best_jpeg
    else min(best_jpeg.values()) >= need,
  }


def load_reports(paths: Sequence[str]) -> list[dict[str, Any]]:
  """The `run_benchmark` reports at `paths` (a run's directory, for its
  benchmark.json, or a .json file); a missing one is left out with a printed line
  (that run did not start)."""
  reports = []
  for path in paths:
    path = path if path.endswith(".json") else os.path.join(path, "benchmark.json")
    if not os.path.exists(path):
      print(f"merge: {path} not found (that run did not start); left out", flush=True)
      continue
    with open(path) as f:
      reports.append(json.load(f))
  return reports


def merge_reports(
  reports: Sequence[dict[str, Any]],
  *,
  input_measured: dict[str, Any] | None = None,
  command: str = "",
) -> dict[str, Any]:
  """One report of several `run_benchmark` reports (one process per variant:
  XLA flags are read when the backend starts), compared case by case; the
  first is the baseline. With `input_measured` (`input_benchmark.measure`), also
  `input`: it and its `input_side`."""
  if not reports:
    raise ValueError("no benchmark reports to merge")
  keys = []
  for rep in reports:
    for e in rep["results"]:
      if case_key(e) not in keys:
        keys.append(case_key(e))
  comparison = []
  for key in keys:
    row = {"case": key, "values": {}}
    for i, rep in enumerate(reports):
      name = rep.get("variant") or f"run{i}"
      e = next((e for e in rep["results"] if case_key(e) == key), None)
      if e is not None:
        row["values"][name] = {k: e.get(k) for _, k, _ in HEADLINES[e["section"]]}
    comparison.append(row)
  merged = {
    "device": reports[0]["device"],
    "command": command,
    "config": reports[0]["config"],
    "variants": list(reports),
    "comparison": comparison,
  }
  if input_measured:
    merged["input"] = {"measured": input_measured, **input_side(input_measured, reports[0])}
  return merged


def _variant_names(merged: dict[str, Any]) -> list[str]:
  return [r.get("variant") or f"run{i}" for i, r in enumerate(merged["variants"])]


def format_merged_markdown(merged: dict[str, Any]) -> str:
  """The comparison of the variants, the input side, then each variant's tables."""
  info = merged["device"]
  names = _variant_names(merged)
  lines = [
    "# heatpose_jax benchmark: baseline and variants",
    "",
    f"- date: {info['date']}",
    f"- device: {info['device_kind']} × {info['num_devices']} ({info['platform']}); "
    f"host: {info['cpu_cores']} CPU cores; jax {info['jax']}, flax {info['flax']}",
    f"- command: `{merged['command']}`",
    f"- config: {merged['config']}",
    "- one process per variant (XLA flags are read when the backend starts):",
  ]
  for name, r in zip(names, merged["variants"], strict=True):
    lines.append(
      f"  - {name}: XLA_FLAGS `{r.get('xla_flags') or '(none)'}`; `{r['command']}`"
      + (f"; {len(r['skipped'])} skipped" if r["skipped"] else "")
      + (f"; {len(r['failed'])} failed" if r["failed"] else "")
    )
  lines += _comparison_table(merged)
  if "input" in merged:
    lines += _input_section(merged["input"])
  for name, r in zip(names, merged["variants"], strict=True):
    body = format_markdown(r).split("\n", 1)[1].replace("\n## ", "\n### ")
    lines += [f"## Variant: {name}", body, ""]
  return "\n".join(lines)


def _comparison_table(merged: dict[str, Any]) -> list[str]:
  """Markdown lines: each case's headline numbers (`HEADLINES`), one column per variant."""
  names = _variant_names(merged)
  lines = ["", "## Comparison", "", "| case | number | " + " | ".join(names) + " |"]
  lines.append("|---|---|" + "---|" * len(names))
  for row in merged["comparison"]:
    section = row["case"].split()[0]
    for label, key, digits in HEADLINES[section]:
      cells = [_f((row["values"].get(n) or {}).get(key), digits) for n in names]
      if any(c != "–" for c in cells):
        lines.append(f"| {row['case']} | {label} | " + " | ".join(cells) + " |")
  return lines + [""]


def _input_section(inp: dict[str, Any]) -> list[str]:
  """Markdown lines of `merge_reports`'s `input`: the verdict, then the measured table."""
  from studies import input_benchmark  # PIL and the input pipeline: only when there is input

  ok = inp["jpeg_keeps_up_with_joint"]

  def rates(d):
    return "; ".join(f"{k}: {_f(v, 0)}" for k, v in d.items()) or "–"

  return [
    "## Input side (host pipeline, this machine's CPU cores)",
    "",
    f"- best `make_dataset` img/s from JPEGs: {rates(inp['best_jpeg_img_s'])}",
    f"- from the canvas cache: {rates(inp['best_cache_img_s'])}",
    f"- training img/s (baseline): {rates(inp['train_img_s'])}; JPEG decoding keeps up "
    f"with the joint phase: "
    f"{'–' if ok is None else ('yes' if ok else 'NO: train from the canvas cache')}",
    "",
    input_benchmark.format_markdown(inp["measured"]),
    "",
  ]


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


TORCH_PEER = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # ../shared/peers of the repo
  "..",
  "shared",
  "peers",
  "torch_cpu_latency.py",
)
TORCH_MODES = ("eager", "eager_cl", "compile", "compile_cl")
PEER_JOINTS = {"mpii": 16, "flic": 7}


def torch_peer_latency(
  python: str,
  model: str,
  *,
  peer: str = TORCH_PEER,
  modes: Sequence[str] = TORCH_MODES,
  iters: int = 20,
  timeout_s: float = 600,
) -> list[dict[str, Any]]:
  """The PyTorch peer's batch-1 CPU latency of the same cascade (`peer`, run by the
  interpreter `python` of its own virtual environment; never imported here): one
  dict per mode as the script prints it (`median_s`, `gflop`, `gflops_per_s`, ...),
  or `{"mode", "error"}`."""
  import subprocess

  env = dict(
    os.environ,
    BANK=model,
    J=str(PEER_JOINTS[model]),
    ITERS=str(iters),
    MODES=",".join(modes),
  )
  env.pop("XLA_FLAGS", None)
  try:
    proc = subprocess.run(
      [python, os.path.abspath(peer)],
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout_s,
      check=False,
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    return [{"mode": m, "error": f"{type(e).__name__}: {e}"[:300]} for m in modes]
  rows = []
  for line in proc.stdout.splitlines():
    line = line.strip()
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  if not rows:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    rows = [{"mode": m, "error": f"exit {proc.returncode}: {tail[0]}"[:300]} for m in modes]
  return rows


def cpu_latency_report(
  models: Sequence[str] = ("mpii", "flic"),
  *,
  pool: int = 8,
  iters: int = 20,
  warmup: int = 2,
  batches: Sequence[int] = (1,),
  tiny: bool = False,
  command: str = "",
  output_dir: str = "",
  torch_python: str = "",
  torch_peer: str = TORCH_PEER,
  torch_modes: Sequence[str] = TORCH_MODES,
  output_name: str = "cpu_latency",
) -> dict[str, Any]:
  """Float32 latency of the full cascades on this machine's CPU cores at each of
  `batches` (`latency_stats` with the `Predictor` path), and with `torch_python`
  the PyTorch peer's batch-1 latency of the same network in the same run, right
  after each model's (`torch_peer_latency`) -> `output_dir/{output_name}.{json,md}`."""
  cpu = _cpu_device()
  if cpu is None:
    raise ValueError("no CPU backend: JAX_PLATFORMS must include cpu")
  mesh = sharding.make_mesh([cpu])
  report = {
    "device": {**device_info(), "device_kind": cpu.device_kind, "platform": "cpu"},
    "cpu_model": _cpu_model(),
    "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "command": command,
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
    "compiler_options": inference.compiler_options("cpu"),
    "compilation_cache": jax.config.jax_compilation_cache_dir or "",
    "loadavg_before": list(os.getloadavg()),
    "results": [],
    "torch": [],
  }

  def write():
    if output_dir:
      fileio.write_json(os.path.join(output_dir, f"{output_name}.json"), report)
      fileio.write_text(os.path.join(output_dir, f"{output_name}.md"), format_cpu_latency(report))

  for name in models:
    for batch in batches:
      config = model_config(name, pool=pool, dtype="float32", batch_size=batch, tiny=tiny)
      report["results"].append(_cpu_latency_entry(config, name, pool, batch, mesh, iters, warmup))
      write()
    if torch_python:
      for row in torch_peer_latency(
        torch_python, name, peer=torch_peer, modes=torch_modes, iters=iters
      ):
        row["model"] = name
        report["torch"].append(row)
        print(f"torch peer {name}: {row}", flush=True)
      write()
  report["loadavg_after"] = list(os.getloadavg())
  write()
  return report


def _cpu_latency_entry(config, name: str, pool: int, batch: int, mesh, iters: int, warmup: int):
  """One row of `cpu_latency_report`: `latency_stats` with the `Predictor` path of
  `config` (model `name`, `pool`x pooling) at `batch`, and the load average after it;
  prints its line."""
  h, w = config.input_hw
  t = time.perf_counter()
  stats = latency_stats(config, batch, mesh, iters=iters, warmup=warmup, predictor=True)
  entry = {
    "model": name,
    "input": f"{w}x{h}",
    "joints": from_config.skeleton(config).num_joints,
    "pool": pool,
    "dtype": "float32",
    "batch": batch,
    **stats,
    "predictor_ms_per_image": stats["predictor_ms"] / batch,
    "predictor_gflops": stats["gflop_per_image"] * batch / (stats["predictor_ms"] / 1e3),
    "measure_s": time.perf_counter() - t,
    # Another job on one of a few cores shows as a slower, still tight, run.
    "loadavg_1min_after": os.getloadavg()[0],
  }
  print(
    f"{name} {w}x{h} batch {batch}: Predictor {entry['predictor_ms']:.1f} ms, "
    f"AOT {entry['aot_ms']:.1f} ms (p10–p90 {entry['aot_p10_ms']:.1f}–"
    f"{entry['aot_p90_ms']:.1f}), jit {entry['jit_ms']:.1f}",
    flush=True,
  )
  return entry


def format_cpu_latency(report: dict[str, Any]) -> str:
  """cpu_latency.md: one row per model and batch, then the PyTorch peer's modes
  with the speed ratio (peer time / ours, ≥ 1: ours is faster) of the batch-1 row."""
  info = report["device"]
  r0 = report["results"][0] if report["results"] else {}
  after = report.get("loadavg_after", report["loadavg_before"])
  lines = [
    "# Cascade latency on the CPU (float32, uint8 canvas to joints)",
    "",
    f"- date: {info['date']}",
    f"- CPU: {report['cpu_model'] or info['device_kind']}, nproc {report['nproc']}; "
    f"load average before / after: {', '.join(f'{x:.1f}' for x in report['loadavg_before'])} / "
    f"{', '.join(f'{x:.1f}' for x in after)}",
    f"- jax {info['jax']}, flax {info['flax']}; XLA_FLAGS `{report.get('xla_flags') or ''}`; "
    f"prediction compile options `{report.get('compiler_options')}`; "
    f"persistent compilation cache `{report.get('compilation_cache') or 'off'}`",
    f"- command: `{report['command']}`",
    f"- median of {r0.get('iters', '?')} warm calls each, interleaved; random parameters "
    "(the work does not depend on them). Predictor: `Predictor(images)` on canvas-sized "
    "uint8 images (letterbox, jitted `inference.predict`, joints back in image pixels); "
    "AOT: the compiled `inference.predict` (joints and scores, `predict_joints`) on a "
    "device-resident canvas; "
    "jit: the same through `jax.jit` dispatch; host: numpy canvas in, numpy joints out. "
    "First call: a new `Predictor`'s first image, compile included (cold: no cache; "
    "cached: in-memory caches cleared, the persistent cache kept, as a new process).",
    "",
    "| model | input (W×H) | J | pool | batch | Predictor ms | ms / image | AOT ms "
    "| AOT p10–p90 ms | jit ms | host ms | GFLOP / image | GFLOP/s | compile s "
    "| first call s (cold / cached) | load (1 min) after |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  lines += [_cpu_latency_row(r) for r in report["results"]]
  lines += _torch_peer_table(report)
  lines.append("")
  return "\n".join(lines)


def _cpu_latency_row(r: dict[str, Any]) -> str:
  b = r.get("batch", 1)
  return (
    f"| {r['model']} | {r['input']} | {r['joints']} | {r['pool']}x | {b} "
    f"| {_f(r['predictor_ms'], 1)} | {_f(r['predictor_ms'] / b, 1)} | {_f(r['aot_ms'], 1)} "
    f"| {_f(r['aot_p10_ms'], 1)}–{_f(r['aot_p90_ms'], 1)} | {_f(r['jit_ms'], 1)} "
    f"| {_f(r['host_ms'], 1)} | {_f(r['gflop_per_image'], 1)} "
    f"| {_f(r['gflop_per_image'] * b / (r['predictor_ms'] / 1e3), 1)} "
    f"| {_f(r['compile_s'], 1)} "
    f"| {_f(r['predictor_first_call_s'], 1)} / "
    f"{_f(r.get('predictor_first_call_cached_s', math.nan), 1)} "
    f"| {_f(r.get('loadavg_1min_after'), 1)} |"
  )


def _torch_peer_table(report: dict[str, Any]) -> list[str]:
  """Markdown lines: the PyTorch peer's modes with the speed ratio of our batch-1
  Predictor (none without peer rows)."""
  rows = report.get("torch") or []
  if not rows:
    return []
  lines = [
    "",
    "## The PyTorch peer, same run (`../shared/peers/torch_cpu_latency.py`, batch 1, "
    "fp32, its own analytic GFLOP; the peer runs FLIC's bank on a 256×256 input)",
    "",
    "| model | mode | torch | threads | median ms | min ms | GFLOP | GFLOP/s | first call s "
    "| ours (Predictor) / peer speed |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  ours = {r["model"]: r for r in report["results"] if r.get("batch", 1) == 1}
  for t in rows:
    if "error" in t:
      lines.append(f"| {t.get('model')} | {t['mode']} | error: {t['error']} |||||||| |")
      continue
    mine = ours.get(t.get("model"))
    ratio = t["median_s"] * 1e3 / mine["predictor_ms"] if mine else math.nan
    lines.append(
      f"| {t.get('model')} | {t['mode']} | {t.get('torch', '')} | {t.get('threads', '')} "
      f"| {_f(t['median_s'] * 1e3, 1)} | {_f(t['min_s'] * 1e3, 1)} | {_f(t['gflop'], 1)} "
      f"| {_f(t['gflops_per_s'], 1)} | {_f(t.get('first_s', math.nan), 1)} "
      f"| {_f(ratio, 2)}× |"
    )
  return lines
