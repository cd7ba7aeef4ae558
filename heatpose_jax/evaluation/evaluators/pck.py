"""PCK / PCKh of every estimate: one table per threshold and the curves.

  config.evals.pck_torso = dict(type="pck", normalizer="torso_size", thresholds=(0.1, 0.2))

The headline evaluation (`config.eval`, `evaluator.score`) is this evaluator
with the σ of `sigma`; an entry of `config.evals` adds another normalizer or
other thresholds to the same prediction pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from heatpose_jax.data import dataset_specs
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics
from heatpose_jax.evaluation.evaluators import estimates

CURVE_POINTS = 21


def metric_name(normalizer: str, protocol: str = "") -> str:
  """'PCKh' (head-normalized) or 'PCK' (torso-normalized), with the FLIC protocol."""
  name = "PCKh" if normalizer == "head_size" else "PCK"
  return f"{name} ({protocol} protocol)" if protocol else name


def check(
  *, normalizer: str, thresholds: Sequence[float] = (0.05, 0.1, 0.2), curve_max: float = 0.2
) -> None:
  """Raises ValueError on arguments `evaluate` cannot use."""
  if normalizer not in dataset_specs.NORMALIZERS:
    raise ValueError(f"normalizer must be 'head_size' or 'torso_size', got {normalizer!r}")
  if not len(thresholds) or min(thresholds) < 0:
    raise ValueError(f"thresholds={tuple(thresholds)!r}: must be a non-empty list of values >= 0")
  if curve_max < 0:
    raise ValueError(f"curve_max={curve_max!r}: must be >= 0")


def evaluate(
  preds: Mapping[str, np.ndarray],
  *,
  skeleton: joints_lib.Skeleton,
  pools: metrics.Pools,
  normalizer: str,
  thresholds: Sequence[float] = (0.05, 0.1, 0.2),
  curve_max: float = 0.2,
) -> dict:
  """Tables and curves of every estimate in `preds` (see the package docstring).

  Args:
    normalizer: the per-example `(N,)` field of `preds` the distances are divided
      by: 'head_size' (PCKh) or 'torso_size' (PCK).
    thresholds: α values of the tables.
    curve_max: the curves run over α in [0, curve_max] (`CURVE_POINTS` points).

  Returns:
    {"num_examples", "normalizer", "metric", and for each estimate m:
    m: {"table": {α: {column: %}}, "curve": {"alpha": [...], column: [...]},
    "per_joint_curve": {joint: [...]}}}.
  """
  check(normalizer=normalizer, thresholds=thresholds, curve_max=curve_max)
  gt, valid, norm = preds["joints"], preds["joints_valid"] > 0, preds[normalizer]
  alphas = np.linspace(0.0, curve_max, CURVE_POINTS)
  result = {
    "num_examples": int(gt.shape[0]),
    "normalizer": normalizer,
    "metric": metric_name(normalizer),
  }
  for m in estimates(preds):
    tables = metrics.pck_tables(preds[m], gt, valid, norm, skeleton, thresholds, pools)
    rates, counts = metrics.pck_curve(preds[m], gt, valid, norm, alphas)
    curve = metrics.table(rates, counts, skeleton, pools)
    result[m] = {
      "table": {str(t): v for t, v in tables.items()},
      "curve": {"alpha": alphas.tolist(), **{k: np.asarray(v).tolist() for k, v in curve.items()}},
      "per_joint_curve": {jn: rates[:, j].tolist() for j, jn in enumerate(skeleton.model_joints)},
    }
  return result


def estimate_scalars(m: str, metric: str, scores: Mapping) -> Iterator[tuple[str, float]]:
  """`m/PCKh@α/column` of one estimate's `scores` (`result[m]`); `metric` is 'PCK' or 'PCKh'."""
  for t, cols in scores["table"].items():
    for col, v in cols.items():
      yield f"{m}/{metric}@{t}/{col}", v


def scalars(result: Mapping) -> Iterator[tuple[str, float]]:
  """Every table cell, `cascade/PCK@0.2/Total`, ..."""
  metric = result["metric"].split()[0]
  for m in estimates(result):
    yield from estimate_scalars(m, metric, result[m])


def format_table(result: Mapping, title: str = "") -> str:
  """The one table a command prints: each estimate's columns at the largest
  threshold, and the Total (or mean) at every other threshold."""
  models = estimates(result)
  ts = list(result[models[0]]["table"])
  main = ts[-1]
  rows = {}
  for m in models:
    cols = dict(result[m]["table"][main])
    for t in ts[:-1]:
      c = result[m]["table"][t]
      cols[f"Total@{t}" if "Total" in c else f"mean@{t}"] = (
        c["Total"] if "Total" in c else float(np.nanmean(list(c.values())))
      )
    rows[m] = cols
  head = f"{title}: " if title else ""
  lines = [f"{head}{result['metric']}@{main} (%), {result['num_examples']} examples"]
  lines.append(metrics.format_rows(rows))
  return "\n".join(lines)
