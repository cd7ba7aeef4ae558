r"""Scores a predictions file against a benchmark's ground truth; prints the table.

  python -m experiments.evaluate_predictions --dataset=mpii \
    --predictions=preds.mat --ground_truth=valid.h5 [--threshold=0.5] \
    [--output_json=scores.json]
  python -m experiments.evaluate_predictions --dataset=flic \
    --predictions=preds.h5 --ground_truth=examples.mat [--observer_centric]

MPII: PCKh (Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, UBody, Total) at
--threshold (default 0.5); ground truth = stacked-hourglass `valid.h5` or HRNet
`gt_valid.mat`. FLIC: PCK (Head, Shoulder, Elbow, Wrist) at α = 0.05 and 0.2, or
only at --threshold; ground truth = `examples.mat` (test rows in file order).
File formats: `heatpose_jax/prediction_io.py`; protocols: `heatpose_jax/metrics.py`.

--output_json writes percentages (NaN as null): MPII and FLIC with --threshold,
one flat object `{"Head": ..., ...}`; FLIC without it, one object per threshold
keyed by its decimal text, `{"0.05": {...}, "0.2": {...}}`.

Errors (unreadable file, wrong shape, count mismatch, bad flags) print one line
`error: ...` on stderr and exit with status 1.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence

from absl import app, flags

from heatpose_jax import metrics, prediction_io

_DATASET = flags.DEFINE_string("dataset", None, "mpii or flic.")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Predictions file (.mat or .h5).")
_GROUND_TRUTH = flags.DEFINE_string(
  "ground_truth", None, "MPII valid.h5 / gt_valid.mat, or FLIC examples.mat."
)
_THRESHOLD = flags.DEFINE_float(
  "threshold", None, "Normalized-distance threshold α (MPII default 0.5; FLIC 0.05 and 0.2)."
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the table as JSON here.")
_OBSERVER_CENTRIC = flags.DEFINE_bool(
  "observer_centric", False, "FLIC: observer-centric labels and torso normalizer."
)


def evaluate(
  dataset: str,
  predictions: str,
  ground_truth: str,
  thresholds: Sequence[float] | None = None,
  observer_centric: bool = False,
) -> dict[float, dict[str, float]]:
  """Reads both files and scores them.

  Args:
    dataset: "mpii" or "flic".
    predictions: predictions file path.
    ground_truth: ground-truth file path.
    thresholds: α values; None = the dataset's table defaults.
    observer_centric: FLIC only, see `metrics.flic_pck_tables`.

  Returns:
    α -> column -> percentage.

  Raises:
    ValueError: bad dataset, flags or files (a one-line message).
  """
  if dataset == "mpii":
    if observer_centric:
      raise ValueError("--observer_centric applies to --dataset=flic only")
    gt = prediction_io.read_mpii_ground_truth(ground_truth)
    pred = prediction_io.read_mpii_predictions(predictions, num_examples=len(gt))
    ts = thresholds or (metrics.MPII_TABLE_THRESHOLD,)
    return {t: metrics.mpii_pckh_table(pred, gt.joints, gt.valid, gt.normalizer, t) for t in ts}
  if dataset == "flic":
    gt = prediction_io.read_flic_ground_truth(ground_truth)
    pred = prediction_io.read_flic_predictions(predictions, num_examples=len(gt))
    ts = thresholds or metrics.FLIC_TABLE_THRESHOLDS
    return metrics.flic_pck_tables(pred, gt.joints, gt.valid, ts, observer_centric)
  raise ValueError(f"unknown --dataset {dataset!r}; expected mpii or flic")


def _json_ready(d):
  if isinstance(d, dict):
    return {k: _json_ready(v) for k, v in d.items()}
  return None if math.isnan(d) else d


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {list(argv[1:])}")
  try:
    for name, flag in (
      ("dataset", _DATASET),
      ("predictions", _PREDICTIONS),
      ("ground_truth", _GROUND_TRUTH),
    ):
      if not flag.value:
        raise ValueError(f"--{name} is required")
    if _THRESHOLD.value is not None and not _THRESHOLD.value >= 0:
      raise ValueError(f"--threshold must be ≥ 0, got {_THRESHOLD.value}")
    ts = None if _THRESHOLD.value is None else (_THRESHOLD.value,)
    tables = evaluate(
      _DATASET.value, _PREDICTIONS.value, _GROUND_TRUTH.value, ts, _OBSERVER_CENTRIC.value
    )
    metric = "PCKh" if _DATASET.value == "mpii" else "PCK"
    print(metrics.format_table({f"{metric}@{t:g}": cols for t, cols in tables.items()}))
    if _OUTPUT_JSON.value:
      if len(tables) == 1:
        out = next(iter(tables.values()))
      else:
        out = {f"{t:g}": cols for t, cols in tables.items()}
      with open(_OUTPUT_JSON.value, "w") as f:
        json.dump(_json_ready(out), f, indent=2)
        f.write("\n")
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
