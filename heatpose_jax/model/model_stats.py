"""Parameter counts and FLOPs of the models.

Two FLOP counts of one traced function (`flops`):
  * 'xla': XLA's cost analysis of the lowered, unoptimized module (global, not
    per device; every op, elementwise ones included). The backends behind a
    PJRT plugin (the GPU) have no analysis of a lowered module.
  * 'analytic': 2 × the multiply-adds of every convolution (taps on padding not
    counted, as XLA does) and matrix product of the function's jaxpr
    (`jaxpr_flops`), from their shapes; elementwise ops are not counted (a few
    % of the paper's models). Device-independent.

A train step's jaxpr holds its backward pass explicitly, so both counts of a
step are forward + backward (+ optimizer).
"""

from __future__ import annotations

import math

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from heatpose_jax.model import models


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))


def _valid_taps(
  size: int, out: int, kernel: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int
) -> int:
  """Σ over the outputs of one spatial axis of the kernel taps that land on the
  (dilated) input, not on its padding: what a convolution really multiplies."""
  o = np.arange(out)[:, None]
  pos = o * stride - pad_lo + np.arange(kernel)[None, :] * rhs_dil
  ok = (pos >= 0) & (pos <= (size - 1) * lhs_dil) & (pos % lhs_dil == 0)
  return int(ok.sum())


def _eqn_flops(eqn) -> float:
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]  # (batch|out, feature|in, *spatial)
    taps = 1
    for i in range(len(rhs_spec) - 2):
      taps *= _valid_taps(
        lhs.shape[lhs_spec[2 + i]],
        out.shape[out_spec[2 + i]],
        rhs.shape[rhs_spec[2 + i]],
        p["window_strides"][i],
        p["padding"][i][0],
        p["lhs_dilation"][i],
        p["rhs_dilation"][i],
      )
    batch_features = out.shape[out_spec[0]] * out.shape[out_spec[1]]
    return 2.0 * batch_features * rhs.shape[rhs_spec[1]] * taps
  if name == "dot_general":
    lhs = eqn.invars[0].aval
    (contract, _), _ = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[d] for d in contract)
  return 0.0


def _sub_jaxprs(value):
  if isinstance(value, jex.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex.Jaxpr):
    yield value
  elif isinstance(value, tuple | list):
    for v in value:
      yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr) -> float:
  """The analytic count: 2 × multiply-adds of the convolutions and matrix
  products of a (closed) jaxpr, nested jaxprs included (a scan's body × its
  length, a cond's most expensive branch, a while loop's body once)."""
  jaxpr = jaxpr.jaxpr if isinstance(jaxpr, jex.ClosedJaxpr) else jaxpr
  total = 0.0
  for eqn in jaxpr.eqns:
    total += _eqn_flops(eqn)
    subs = [f for v in eqn.params.values() for f in map(jaxpr_flops, _sub_jaxprs(v))]
    if not subs:
      continue
    if eqn.primitive.name == "cond":
      total += max(subs)
    elif eqn.primitive.name == "scan":
      total += eqn.params["length"] * sum(subs)
    else:
      total += sum(subs)
  return total


def xla_flops(lowered: jax.stages.Lowered) -> float | None:
  """XLA's cost analysis of a lowered (unoptimized) module, or None where the
  backend has none (PJRT plugins such as the GPU's raise NotImplementedError)."""
  try:
    cost = lowered.cost_analysis()
  except NotImplementedError:
    return None
  if isinstance(cost, list | tuple):  # older jax: one dict per program
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None and flops > 0 else None


def flops(
  traced: jax.stages.Traced, lowered: jax.stages.Lowered | None = None
) -> tuple[float, str]:
  """(FLOPs, source) of a traced function: 'xla' where the backend analyses
  lowered modules, else 'analytic' (module docstring).

  Args:
    traced: `jax.jit(fn).trace(*args)`.
    lowered: its `lower()`, if already made.
  """
  count = xla_flops(traced.lower() if lowered is None else lowered)
  if count is not None:
    return count, "xla"
  return jaxpr_flops(traced.jaxpr), "analytic"


def model_stats(model: models.Cascade | models.StandardCascade, input_hw: tuple[int, int]) -> dict:
  """Parameters and per-image GFLOPs of a cascade (batch 1, nothing compiled).

  Returns:
    dict: params_coarse, params_fine, gflop_coarse (forward), gflop_cascade
    (forward: coarse, crop, fine), gflop_fine (the difference),
    gflop_train_coarse (forward + backward of a loss on the coarse heat-maps)
    and flop_source ('xla' or 'analytic').
  """
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  params = variables["params"]

  def coarse(v, x):
    return model.apply(v, x, train=False, method=model.coarse_heatmaps)

  def cascade(v, x):
    return model.apply(v, x, train=False).xy

  def train_coarse(v, x):
    return jax.grad(lambda v: jnp.sum(coarse(v, x) ** 2))(v)

  counts = {}
  for name, fn in (("coarse", coarse), ("cascade", cascade), ("train_coarse", train_coarse)):
    counts[name] = flops(jax.jit(fn).trace(variables, x))
  return {
    "params_coarse": count_params(params["coarse"]),
    "params_fine": count_params(params["fine"]),
    "gflop_coarse": counts["coarse"][0] / 1e9,
    "gflop_fine": (counts["cascade"][0] - counts["coarse"][0]) / 1e9,
    "gflop_cascade": counts["cascade"][0] / 1e9,
    "gflop_train_coarse": counts["train_coarse"][0] / 1e9,
    "flop_source": counts["coarse"][1],
  }


# The paper's two input sizes and joint counts.
PAPER_MODELS = {"flic": ((240, 320), 7), "mpii": ((256, 256), 16)}


def paper_table(pool_factors=(4, 8, 16)) -> list[dict]:
  """`model_stats` of the FLIC and MPII models at each pooling factor."""
  rows = []
  for variant, (hw, j) in PAPER_MODELS.items():
    for pf in pool_factors:
      model = models.make_model(num_joints=j, variant=variant, pool_factor=pf)
      rows.append(
        {"model": variant, "pool": pf, "input": f"{hw[1]}x{hw[0]}", **model_stats(model, hw)}
      )
  return rows


def format_stats(rows: list[dict]) -> str:
  """Markdown table of `paper_table` rows."""
  head = (
    "| model | pool | input (WxH) | params coarse | params fine | GFLOP coarse | GFLOP fine "
    "| GFLOP cascade | GFLOP coarse train step | FLOPs from |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
  )
  lines = [head]
  for r in rows:
    lines.append(
      f"| {r['model']} | {r['pool']}x | {r['input']} | {r['params_coarse'] / 1e6:.2f} M "
      f"| {r['params_fine'] / 1e6:.2f} M | {r['gflop_coarse']:.1f} | {r['gflop_fine']:.2f} "
      f"| {r['gflop_cascade']:.1f} | {r['gflop_train_coarse']:.1f} | {r['flop_source']} |"
    )
  return "\n".join(lines)
