"""Parameter counts and FLOPs of the models, from XLA's cost analysis."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from heatpose_jax import models


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))


def _flops(fn, *args) -> float:
  return float(jax.jit(fn).lower(*args).cost_analysis()["flops"])


def model_stats(model: models.Cascade | models.StandardCascade, input_hw: tuple[int, int]) -> dict:
  """Parameters and per-image GFLOPs of a cascade (batch 1, float32, no compile).

  Returns:
    dict: params_coarse, params_fine, gflop_coarse (forward), gflop_cascade
    (forward, coarse + crop + fine), gflop_fine (the difference) and
    gflop_train_coarse (forward + backward of E1).
  """
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  params = variables["params"]

  def coarse(v, x):
    return model.apply(v, x, train=False, method=model.coarse_heatmaps)

  def cascade(v, x):
    return model.apply(v, x, train=False)["xy"]

  def train_coarse(v, x):
    return jax.grad(lambda v: jnp.sum(coarse(v, x) ** 2))(v)

  g_coarse = _flops(coarse, variables, x) / 1e9
  g_cascade = _flops(cascade, variables, x) / 1e9
  return {
    "params_coarse": count_params(params["coarse"]),
    "params_fine": count_params(params["fine"]),
    "gflop_coarse": g_coarse,
    "gflop_fine": g_cascade - g_coarse,
    "gflop_cascade": g_cascade,
    "gflop_train_coarse": _flops(train_coarse, variables, x) / 1e9,
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


def format_table(rows: list[dict]) -> str:
  """Markdown table of `paper_table` rows."""
  head = (
    "| model | pool | input (WxH) | params coarse | params fine | GFLOP coarse | GFLOP fine "
    "| GFLOP cascade | GFLOP coarse train step |\n|---|---|---|---|---|---|---|---|---|"
  )
  lines = [head]
  for r in rows:
    lines.append(
      f"| {r['model']} | {r['pool']}x | {r['input']} | {r['params_coarse'] / 1e6:.2f} M "
      f"| {r['params_fine'] / 1e6:.2f} M | {r['gflop_coarse']:.1f} | {r['gflop_fine']:.2f} "
      f"| {r['gflop_cascade']:.1f} | {r['gflop_train_coarse']:.1f} |"
    )
  return "\n".join(lines)
