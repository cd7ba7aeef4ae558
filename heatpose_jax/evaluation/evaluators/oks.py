"""COCO's OKS AP / AR of every estimate, by pycocotools, on the evaluation's own
prediction pass (ground-truth person boxes: COCO's "GT box" protocol).

  config.evals.oks = dict(type="oks", sigmas="")   # configs/coco.py sets it

The numbers are `coco_eval.scores`' (the computation `experiments.evaluate_predictions
--dataset=coco` runs on files), on a ground truth and results built in memory from
`preds`, in the image frame (the canvas estimates mapped by `canvas_to_image`,
COCO's keypoint frame: pixel indices):

- ground truth: one annotation per scored example (the COCO-format build's people:
  not crowd, at least one labelled keypoint), in an image per `image_id`, so that
  results are matched to the people of their image as COCO matches them; its
  keypoints are the example's labels (`joints`, v = 2 visible, 1 labelled, 0 not:
  the labels the pipeline keeps, those on the canvas), its `bbox` the build's.
- area (OKS's scale s): the annotation's `area` (COCO's: the segmentation's) where
  the build carries one for every person; otherwise, and always with CrowdPose's
  sigmas, 0.53 × the box's w · h (crowdposetools' area, as `coco_eval` does for
  files without `area`). Result: `area` 'annotation' or 'box053'.
- results: per person the estimate, each joint's heat-map score, and score = the
  mean joint score (box score 1 × mean joint score, as `experiments.predict
  --boxes` writes them); the MRF variants use `scores_mrf`.

Differences from scoring the annotation file itself: crowd regions and people
without labelled keypoints are not in the build, so a result cannot be ignored
by matching one (pycocotools ignores, does not count, such matches), and only
the evaluated examples' people are there (`config.max_eval_examples`). On the
same people the numbers equal `evaluate_predictions`' (`tests/coco_test.py`).

Sigmas (`sigmas`): '' chooses by the joint names (`coco_format.oks_sigmas`:
COCO's 17 for COCO's joints, CrowdPose's 14 for CrowdPose's, else each part's
value); 'coco', 'crowdpose', or K numbers (a sequence, or a string 'v1,...,vK')
name them. A skeleton whose joints have no known sigma and no `sigmas` is one
line naming `config.evals.NAME` when the config is checked (`check`).

Needs the annotation fields of a COCO-format build (`image_id`, `bbox`, `area`:
`input_pipeline.crop_example`); other datasets raise a one-line ValueError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from heatpose_jax.data import coco_format
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import coco_eval
from heatpose_jax.evaluation.evaluators import estimates
from heatpose_jax.model import inference

STAT_NAMES = coco_eval.STAT_NAMES
PRESETS = ("", "coco", "crowdpose")
# The fields of `preds` OKS needs beyond the labels (COCO-format builds).
ANNOTATION_FIELDS = ("image_id", "bbox", "area")
CATEGORY_ID = 1


def _numbers(sigmas: str | Sequence[float]) -> list[float]:
  """The numbers of a given list (a sequence, or 'v1,...,vK')."""
  try:
    return [float(v) for v in (sigmas.split(",") if isinstance(sigmas, str) else sigmas)]
  except (TypeError, ValueError):
    raise ValueError(f"sigmas={sigmas!r}: expected '', 'coco', 'crowdpose' or numbers") from None


def oks_sigmas(names: Sequence[str], sigmas: str | Sequence[float] = "") -> tuple[np.ndarray, str]:
  """`((K,) sigmas, source)` of the joints `names` (module docstring).

  Raises:
    ValueError: one line starting with 'sigmas': a preset or a list that does not
      fit the K joints, or joints without a known sigma and no `sigmas`.
  """
  k = len(names)
  if not isinstance(sigmas, str) or sigmas not in PRESETS:
    given = np.asarray(_numbers(sigmas), np.float64)
    if len(given) != k or not (np.isfinite(given) & (given > 0)).all():
      raise ValueError(f"sigmas: {len(given)} values for the dataset's {k} joints (each > 0)")
    return given, "given"
  try:
    return coco_format.oks_sigmas(names, sigmas)
  except coco_format.UnknownSigmas as e:
    raise ValueError(
      f"sigmas: no OKS sigma known for {', '.join(map(repr, e.unknown))} of the dataset's "
      f"{k} joints: give sigmas=({k} numbers) or remove this evaluator"
    ) from None
  except ValueError:  # a preset of another length
    raise ValueError(f"sigmas={sigmas!r}: its list is not for the dataset's {k} joints") from None


def check(*, sigmas: str | Sequence[float] = "", skeleton: joints_lib.Skeleton | None = None):
  """Raises ValueError on `sigmas` that cannot work (for `skeleton`'s joints, when given)."""
  if skeleton is not None:
    oks_sigmas(skeleton.model_joints, sigmas)
  elif not isinstance(sigmas, str) or sigmas not in PRESETS:
    _numbers(sigmas)


def ground_truth(preds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict:
  """The scored people of `preds` as a COCO annotation file (image frame), unchecked."""
  missing = [f for f in ANNOTATION_FIELDS if f not in preds]
  if missing:
    raise ValueError(
      f"OKS needs the person annotations of a COCO-format build; the predictions lack "
      f"{missing} (another dataset, or a canvas cache built before they were kept: delete it)"
    )
  n = len(preds["joints"])
  xy = inference.canvas_to_image_points(preds["joints"], preds["canvas_to_image"])
  v = np.where(preds["joints_visible"] > 0, 2, np.where(preds["joints_valid"] > 0, 1, 0))
  image_ids = _image_ids(preds)
  anns = []
  for i in range(n):
    kp = np.concatenate([np.where(v[i, :, None] > 0, xy[i], 0.0), v[i, :, None]], axis=1)
    ann = {
      "id": i + 1,
      "image_id": image_ids[i],
      "category_id": CATEGORY_ID,
      "keypoints": [float(t) for t in kp.ravel()],
      "num_keypoints": int((v[i] > 0).sum()),
      "iscrowd": 0,
      "bbox": coco_format.box_to_bbox(preds["bbox"][i]),
    }
    if float(preds["area"][i]) > 0:  # the build's 0: the file had none
      ann["area"] = float(preds["area"][i])
    anns.append(ann)
  return {
    "images": [{"id": i} for i in dict.fromkeys(image_ids)],
    "annotations": anns,
    "categories": [{"id": CATEGORY_ID, "name": "person", "keypoints": list(names)}],
  }


def _image_ids(preds: Mapping[str, np.ndarray]) -> list[int]:
  """Each example's image id; one of its own (negative) where the build's id did not fit."""
  ids = np.asarray(preds["image_id"]).astype(np.int64)
  return [int(i) if i >= 0 else -(k + 1) for k, i in enumerate(ids)]


def results(preds: Mapping[str, np.ndarray], m: str) -> list[dict]:
  """Estimate `m` of `preds` as COCO keypoint results (image frame), in example order."""
  xy = inference.canvas_to_image_points(preds[m], preds["canvas_to_image"])
  scores = np.asarray(
    preds["scores_mrf" if m.endswith("_mrf") and "scores_mrf" in preds else "scores"]
  )
  out = []
  for i, image_id in enumerate(_image_ids(preds)):
    kp = np.concatenate([xy[i], scores[i, :, None]], axis=1)
    out.append(
      {
        "image_id": image_id,
        "category_id": CATEGORY_ID,
        "keypoints": [float(t) for t in kp.ravel()],
        "score": float(np.mean(scores[i])),
      }
    )
  return out


def evaluate(
  preds: Mapping[str, np.ndarray],
  *,
  skeleton: joints_lib.Skeleton,
  pools,
  sigmas: str | Sequence[float] = "",
) -> dict:
  """{"sigmas", "sigmas_source", "area", "num_people", "num_images", and for each
  estimate m: m: {"stats": {AP ... ARl}, "summary": pycocotools' ten lines}}
  (fractions; −1 where pycocotools says −1). `pools` is unused."""
  del pools
  names = list(skeleton.model_joints)
  sig = oks_sigmas(names, sigmas)
  gt = ground_truth(preds, names)
  cat = gt["categories"][0]
  gt, area = coco_eval.ground_truth_for_eval(gt, cat, "evals.oks", box_area=sig[1] == "crowdpose")
  result: dict = {
    "sigmas": [float(s) for s in sig[0]],
    "sigmas_source": sig[1],
    "area": area,
    "num_people": len(gt["annotations"]),
    "num_images": len(gt["images"]),
  }
  for m in estimates(preds):
    out = coco_eval.scores(gt, results(preds, m), cat, sig, area, thresholds=None)
    result[m] = {"stats": out["stats"], "summary": out["summary"]}
  return result


def scalars(result: Mapping) -> Iterator[tuple[str, float]]:
  """`m/AP`, `m/AP50`, ..., `m/ARl` of each estimate m (fractions)."""
  for m in estimates(result):
    for name, value in result[m]["stats"].items():
      yield f"{m}/{name}", value


def format_table(result: Mapping) -> str:
  models = estimates(result)
  width = max(len(m) for m in models)
  lines = [
    f"OKS AP / AR (%, pycocotools; sigmas {result['sigmas_source']}, area {result['area']}), "
    f"{result['num_people']} people in {result['num_images']} images",
    " ".join([" " * width] + [s.rjust(5) for s in STAT_NAMES]),
  ]
  for m in models:
    stats = result[m]["stats"]
    cells = [(f"{100 * stats[s]:.1f}" if stats[s] >= 0 else "-").rjust(5) for s in STAT_NAMES]
    lines.append(" ".join([m.ljust(width)] + cells))
  return "\n".join(lines)
