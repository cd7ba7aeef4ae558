"""σ of the x error per joint, of every estimate (the paper's Fig. 12 measure).

  config.evals.sigma_10 = dict(type="sigma", outlier_px=10.0)

Errors e = x_pred − x_gt in input pixels (the canvas frame), those with
|e| <= outlier_px kept (`metrics.x_error_sigma`). The headline evaluation
(`evaluator.score`) includes it at 20 px.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics
from heatpose_jax.evaluation.evaluators import estimates

OUTLIER_PX = 20.0


def check(*, outlier_px: float = OUTLIER_PX) -> None:
  if not outlier_px > 0:
    raise ValueError(f"outlier_px={outlier_px!r}: must be > 0 (input pixels)")


def evaluate(
  preds: Mapping[str, np.ndarray],
  *,
  skeleton: joints_lib.Skeleton,
  pools: metrics.Pools,
  outlier_px: float = OUTLIER_PX,
) -> dict:
  """{"outlier_px", and for each estimate m: m: {"sigma_x": {joint: σ},
  "sigma_x_removed": n}}: σ (NaN where nothing is kept) per model-order joint, and
  the valid errors removed over all joints. `pools` is unused (σ is per joint)."""
  del pools
  gt, valid = preds["joints"], preds["joints_valid"] > 0
  result: dict = {"outlier_px": float(outlier_px)}
  for m in estimates(preds):
    sig, removed = {}, 0
    for j, jn in enumerate(skeleton.model_joints):
      s, r = metrics.x_error_sigma(preds[m][:, [j]], gt[:, [j]], valid[:, [j]], outlier_px)
      sig[jn] = s
      removed += r
    result[m] = {"sigma_x": sig, "sigma_x_removed": removed}
  return result


def estimate_scalars(m: str, scores: Mapping) -> Iterator[tuple[str, float]]:
  """`m/sigma_x/joint` of one estimate's `scores` (`result[m]`)."""
  for joint, s in scores["sigma_x"].items():
    yield f"{m}/sigma_x/{joint}", s


def scalars(result: Mapping) -> Iterator[tuple[str, float]]:
  for m in estimates(result):
    yield from estimate_scalars(m, result[m])


def format_table(result: Mapping) -> str:
  models = estimates(result)
  head = f"sigma of the x error (input px, |e| <= {result['outlier_px']:g}):"
  return f"{head}\n{metrics.format_rows({m: result[m]['sigma_x'] for m in models})}"
