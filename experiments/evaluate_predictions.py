r"""Scores a predictions file against a benchmark's ground truth; prints the table.

  python -m experiments.evaluate_predictions --dataset=mpii \
    --predictions=preds.mat --ground_truth=valid.h5 [--threshold=0.5] \
    [--output_json=scores.json]
  python -m experiments.evaluate_predictions --dataset=flic \
    --predictions=preds.h5 --ground_truth=examples.mat \
    [--flic_protocol=modec|hourglass|observer_centric]
  python -m experiments.evaluate_predictions --dataset=coco \
    --predictions=RESULTS.json --ground_truth=ANNOTATIONS.json [--sigmas=crowdpose] \
    [--output_json=scores.json]

MPII: PCKh (Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, UBody, Total) at
--threshold (default 0.5); ground truth = stacked-hourglass `valid.h5` or HRNet
`gt_valid.mat`. FLIC: PCK (Head, Shoulder, Elbow, Wrist) at α = 0.05 and 0.2, or
only at --threshold; ground truth = `examples.mat` (test rows in file order),
labels and torso of --flic_protocol (default modec, the FLIC authors' own
`eval_dataset.m`). Each row of the printed table names metric, threshold and
protocol, e.g. `PCK@0.2 (FLIC, modec protocol)` or `PCKh@0.5 (MPII)`.
COCO (any COCO-format keypoint file, `heatpose_jax/evaluation/coco_eval.py`): OKS AP / AR,
COCO's ten numbers, computed by pycocotools (`COCOeval(iouType="keypoints")`) from
the standard results file ([{image_id, category_id, keypoints [x, y, s]×K,
score}]) and the annotation file; the OKS sigmas by the file's joint names (COCO's
17, CrowdPose's 14, or per part) or --sigmas=coco|crowdpose|V1,...,VK; PCK (torso,
--threshold or 0.05, 0.1, 0.2) of the same results beside it (docs/coco.md).
File formats: `heatpose_jax/evaluation/prediction_io.py`; protocols: `docs/protocols.md`.
--dataset is any registered dataset with a community format
(`DatasetSpec.prediction_format`: `READERS`); --dataset_module imports a module
first that registers more.

--output_json writes `{"dataset": ..., "metric": "PCKh" | "PCK", "protocol": ...,
"num_examples": N, "tables": {"<α>": {"Head": ..., ...}, ...}}`, percentages with
NaN as null, α keyed by its decimal text (e.g. "0.05"); MPII's protocol is
"evaluatePCKh". COCO's JSON adds pycocotools' ten numbers at the top level, `AP`,
`AP50`, `AP75`, `APm`, `APl`, `AR`, `AR50`, `AR75`, `ARm`, `ARl` (fractions, −1
where pycocotools says −1), and `coco` (sigmas, area rule, counts); its `tables`
hold the PCK. It never replaces the predictions, the ground truth, or a file
it did not write (refused with one line).

--predictions_layout=NJ2|J2N|2JN names the layout of `preds` ((N, J, 2),
(J, 2, N), (2, J, N)); without it the layout follows from the shape, and a shape
two layouts fit, (2, J, 2), is refused rather than guessed.

Errors (unreadable file, wrong shape, count mismatch, non-finite ground truth, no
example with a normalizer, bad flags) print one line `error: ...` on stderr and
exit with status 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence

from absl import app, flags

from heatpose_jax.core import fileio, outputs
from heatpose_jax.data import dataset_specs, flic_labels
from heatpose_jax.evaluation import coco_eval, metrics, prediction_io

# What the JSON calls MPII's one protocol (MPII's evaluatePCKh.m).
MPII_PROTOCOL = "evaluatePCKh"


def _readable() -> list[str]:
  """The registered datasets this command scores (those with a file format it reads)."""
  return [n for n, s in dataset_specs.SPECS.items() if s.prediction_format in READERS]


_DATASET = flags.DEFINE_string(
  "dataset",
  None,
  "A dataset with a community file format: "
  f"{' or '.join(n for n, s in dataset_specs.SPECS.items() if s.prediction_format)}, "
  "or one --dataset_module registers.",
)
_DATASET_MODULE = flags.DEFINE_string(
  "dataset_module", None, "Module(s) to import first (comma-separated) that register datasets."
)
_PREDICTIONS = flags.DEFINE_string(
  "predictions", None, "Predictions file (.mat or .h5; COCO: a keypoint results .json)."
)
_GROUND_TRUTH = flags.DEFINE_string(
  "ground_truth",
  None,
  "MPII valid.h5 / gt_valid.mat, FLIC examples.mat, or a COCO annotation .json.",
)
_SIGMAS = flags.DEFINE_string(
  "sigmas",
  None,
  "COCO only: OKS sigmas, coco, crowdpose or K comma-separated numbers (default: by joint name).",
)
_THRESHOLD = flags.DEFINE_float(
  "threshold", None, "Normalized-distance threshold α (MPII default 0.5; FLIC 0.05 and 0.2)."
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the table as JSON here.")
_LAYOUT = flags.DEFINE_string(
  "predictions_layout",
  None,
  "Layout of `preds`: NJ2 = (N, J, 2), J2N = (J, 2, N), 2JN = (2, J, N); default: from "
  "the shape (refused where two layouts fit it).",
)
# The keys that make a JSON this command's output (`outputs.json_with`).
JSON_KEYS = ("dataset", "metric", "protocol", "num_examples", "tables")
# A string, not an enum, so that a bad value is one `error:` line like every other error.
_FLIC_PROTOCOL = flags.DEFINE_string(
  "flic_protocol",
  None,
  f"FLIC only: one of {', '.join(flic_labels.PROTOCOLS)} (default modec); see docs/protocols.md.",
)


@dataclasses.dataclass(frozen=True)
class Scores:
  """What `evaluate` measured.

  Attributes:
    dataset: the dataset ("mpii", "flic", ...).
    metric: "PCKh" or "PCK".
    protocol: FLIC: one of `flic_labels.PROTOCOLS`; MPII: `MPII_PROTOCOL`; COCO: `COCO_PROTOCOL`.
    num_examples: N scored rows of the ground truth (COCO: people with a torso, PCK's).
    tables: α -> column -> percentage.
    coco: COCO only: `coco_eval.evaluate`'s result (its `stats` are the ten numbers).
  """

  dataset: str
  metric: str
  protocol: str
  num_examples: int
  tables: dict[float, dict[str, float]]
  coco: dict | None = None

  def row_label(self, threshold: float) -> str:
    """E.g. `PCK@0.2 (FLIC, modec protocol)`, `PCKh@0.5 (MPII)`, `PCK@0.2 (COCO, torso)`."""
    if self.coco is not None:
      return f"PCK@{threshold:g} ({self.dataset.upper()}, torso)"
    if self.protocol in flic_labels.PROTOCOLS:
      return f"{self.metric}@{threshold:g} ({self.dataset.upper()}, {self.protocol} protocol)"
    return f"{self.metric}@{threshold:g} ({self.dataset.upper()})"

  def to_json(self) -> dict:
    out = {
      "dataset": self.dataset,
      "metric": self.metric,
      "protocol": self.protocol,
      "num_examples": self.num_examples,
      "tables": {f"{t:g}": _json_ready(cols) for t, cols in self.tables.items()},
    }
    if self.coco is not None:
      details = {k: v for k, v in self.coco.items() if k not in ("stats", "pck")}
      out = {**out, **self.coco["stats"], "coco": details}
    return out

  def text(self) -> str:
    """The printed report: COCO's summary lines first, then the PCK table(s)."""
    parts = []
    if self.coco is not None:
      c = self.coco
      parts.append(c["summary"])
      parts.append(
        f"OKS sigmas: {c['sigmas_source']}; area: {c['area']}; {c['num_results']} results, "
        f"{c['num_people']} people"
      )
      if not self.tables:
        parts.append(c["pck"].get("note", "no PCK"))
    if self.tables:
      parts.append(metrics.format_rows({self.row_label(t): v for t, v in self.tables.items()}))
    return "\n".join(parts)


def evaluate(
  dataset: str,
  predictions: str,
  ground_truth: str,
  thresholds: Sequence[float] | None = None,
  flic_protocol: str | None = None,
  layout: str | None = None,
  sigmas: str | None = None,
) -> Scores:
  """Reads both files and scores them.

  Args:
    dataset: a registered dataset whose spec names a format of `READERS`
      ("mpii", "flic").
    predictions: predictions file path.
    ground_truth: ground-truth file path.
    thresholds: α values; None = the dataset's table defaults.
    flic_protocol: FLIC only, one of `flic_labels.PROTOCOLS`; None = "modec".
    layout: the predictions' layout (`prediction_io.LAYOUTS`); None = from the shape.
    sigmas: COCO only: the OKS sigmas (`coco_format.oks_sigmas`); None = by joint name.

  Returns:
    `Scores`.

  Raises:
    ValueError: bad dataset, flags or files (a one-line message).
  """
  spec = dataset_specs.SPECS.get(dataset)
  if spec is None or spec.prediction_format not in READERS:
    raise ValueError(f"unknown --dataset {dataset!r}; expected {' or '.join(_readable())}")
  if spec.prediction_format == "coco":
    if flic_protocol is not None or layout is not None:
      bad = "--flic_protocol" if flic_protocol is not None else "--predictions_layout"
      raise ValueError(f"{bad} does not apply to --dataset={dataset}")
    return _evaluate_coco(spec, predictions, ground_truth, thresholds, sigmas)
  if sigmas is not None:
    raise ValueError(f"--sigmas applies to --dataset=coco only, not {dataset}")
  return READERS[spec.prediction_format](
    spec, predictions, ground_truth, thresholds, flic_protocol, layout
  )


def _metric(spec: dataset_specs.DatasetSpec) -> str:
  return "PCKh" if spec.normalizer == "head_size" else "PCK"


def _evaluate_mpii(spec, predictions, ground_truth, thresholds, flic_protocol, layout) -> Scores:
  """MPII's files: `valid.h5` / `gt_valid.mat` and (N, 16, 2) predictions."""
  if flic_protocol is not None:
    raise ValueError("--flic_protocol applies to --dataset=flic only")
  gt = prediction_io.read_mpii_ground_truth(ground_truth)
  pred = prediction_io.read_mpii_predictions(predictions, num_examples=len(gt), layout=layout)
  ts = thresholds or (metrics.MPII_TABLE_THRESHOLD,)
  skel = spec.skeleton
  tables = metrics.pck_tables(pred, gt.joints, gt.valid, gt.normalizer, skel, ts, spec.pools)
  return Scores(spec.name, _metric(spec), MPII_PROTOCOL, len(gt), tables)


def _evaluate_flic(spec, predictions, ground_truth, thresholds, flic_protocol, layout) -> Scores:
  """FLIC's files: examples.mat (a protocol's labels and torso) and (N, 11, 2) predictions."""
  protocol = "modec" if flic_protocol is None else flic_protocol
  if protocol not in flic_labels.PROTOCOLS:
    raise ValueError(
      f"unknown --flic_protocol {protocol!r}; expected one of {', '.join(flic_labels.PROTOCOLS)}"
    )
  gt = prediction_io.read_flic_ground_truth(ground_truth, "test", protocol)
  pred = prediction_io.read_flic_predictions(predictions, num_examples=len(gt), layout=layout)
  skel = spec.skeleton
  if protocol == "observer_centric":
    # Person-centric predictions are relabelled like the ground truth they meet
    # (as `metrics.flic_pck_tables` does); the other protocols compare them as they are.
    pred, _ = flic_labels.to_observer_centric(pred, gt.valid, gt.relabelled, skel)
  m = skel.model_indices
  ts = thresholds or metrics.FLIC_TABLE_THRESHOLDS
  tables = metrics.pck_tables(
    pred[:, m], gt.joints[:, m], gt.valid[:, m], gt.normalizer, skel, ts, spec.pools
  )
  return Scores(spec.name, _metric(spec), protocol, len(gt), tables)


def _evaluate_coco(spec, predictions, ground_truth, thresholds, sigmas) -> Scores:
  """A COCO keypoint results file against a COCO-format annotation file (pycocotools)."""
  ts = thresholds or coco_eval.PCK_THRESHOLDS
  result = coco_eval.evaluate(ground_truth, predictions, sigmas=sigmas or "", thresholds=ts)
  pck = result["pck"]
  tables = {float(t): cols for t, cols in pck.get("tables", {}).items()}
  return Scores(spec.name, "OKS AP", COCO_PROTOCOL, pck.get("num_examples", 0), tables, result)


# What the JSON calls COCO's protocol.
COCO_PROTOCOL = "pycocotools COCOeval keypoints"
# `DatasetSpec.prediction_format` -> the function that reads and scores its files.
READERS = {"mpii": _evaluate_mpii, "flic": _evaluate_flic, "coco": _evaluate_coco}


def _json_ready(d):
  if isinstance(d, dict):
    return {k: _json_ready(v) for k, v in d.items()}
  return None if math.isnan(d) else d


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {list(argv[1:])}")
  try:
    dataset_specs.import_modules(_DATASET_MODULE.value)
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
    if _LAYOUT.value is not None and _LAYOUT.value not in prediction_io.LAYOUTS:
      raise ValueError(
        f"--predictions_layout={_LAYOUT.value}: expected one of {', '.join(prediction_io.LAYOUTS)}"
      )
    if _OUTPUT_JSON.value:  # before any work: never over the inputs or a user's file
      outputs.prepare_file(_OUTPUT_JSON.value, "--output_json")
      outputs.check(
        [(_OUTPUT_JSON.value, outputs.json_with(JSON_KEYS))],
        inputs=[_PREDICTIONS.value, _GROUND_TRUTH.value],
        way_out="choose another --output_json",
      )
    scores = evaluate(
      _DATASET.value,
      _PREDICTIONS.value,
      _GROUND_TRUTH.value,
      ts,
      _FLIC_PROTOCOL.value,
      _LAYOUT.value,
      _SIGMAS.value,
    )
    print(scores.text())
    if _OUTPUT_JSON.value:
      text = json.dumps(scores.to_json(), indent=2) + "\n"
      fileio.write_text(_OUTPUT_JSON.value, text)
  except OSError as e:
    where = f"{e.filename}: " if e.filename is not None else ""
    sys.exit(f"error: {where}{outputs.os_reason(e)}")
  except ValueError as e:
    sys.exit(f"error: {' '.join(str(e).split())}")


if __name__ == "__main__":
  app.run(main)
