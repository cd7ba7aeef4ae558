"""OKS AP / AR of COCO keypoint results, computed by pycocotools, and PCK on the
same predictions.

  scores = coco_eval.evaluate("person_keypoints_val2017.json", "results.json")
  scores["stats"]["AP"]       # pycocotools' stats[0]

The numbers are pycocotools' own: `COCOeval(iouType="keypoints")` matches the
results to the people of each image by OKS and reports COCO's ten numbers
(`STAT_NAMES`, its `stats` in order; −1 where pycocotools says −1: no person in
that area range). Only the keypoint category is scored (`params.catIds`), over
every image of the ground truth. The files are checked first, so that a bad one
is one line naming the file, the entry and the field instead of pycocotools'
assertion.

OKS sigmas (`coco_format.oks_sigmas`): COCO's 17 (pycocotools' defaults), CrowdPose's
14, K given numbers, or each part's value for other files. OKS's scale is the
annotation's `area` (COCO: the segmentation's area); CrowdPose's evaluation
(crowdposetools, a pycocotools fork) uses 0.53 × the box's w·h instead, and so do
we for its sigmas and for files without `area`. With CrowdPose's sigmas and that
area the pycocotools numbers equal crowdposetools' AP, AP50, AP75, AR, AR50, AR75
(same matching, same maxDets 20); its AP easy / medium / hard (images by
`crowdIndex` < 0.2, < 0.8, ≥ 0.8, as its code splits them) are added under
`crowd_index` where the images carry `crowdIndex`.

PCK: each result is matched to the person of its image with the highest OKS
(results by decreasing score, each person once, OKS > 0: pycocotools' matrices);
people without a match count as misses. The normalizer is the torso,
‖right shoulder − left hip‖, people without both labelled are not scored;
labelled = v > 0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from heatpose_jax.data import coco_format
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PCK_THRESHOLDS = (0.05, 0.1, 0.2)
# crowdposetools' `get_type_result(first=0.2, second=0.8)`.
CROWD_INDEX_BOUNDS = (0.2, 0.8)


def evaluate(
  ground_truth: str | Path,
  results: str | Path,
  *,
  sigmas: str = "",
  thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> dict:
  """Scores a COCO keypoint results file against COCO-format ground truth.

  Args:
    ground_truth: the annotation file (images, annotations, categories).
    results: [{image_id, category_id, keypoints [x, y, s] × K, score}].
    sigmas: '' (from the joint names), 'coco', 'crowdpose' or K numbers.
    thresholds: PCK's α values (torso).

  Returns:
    JSON-ready: `stats` {AP ... ARl}, `summary` (pycocotools' ten lines),
    `sigmas`, `sigmas_source`, `area` ('annotation' or 'box053'),
    `num_results`, `num_people` (scored: not crowd, num_keypoints > 0),
    `category_id`, `pck` ({"tables": {α: {column: %}}, "num_examples"} or
    {"note": why not}), and `crowd_index` for CrowdPose (see the module docstring).

  Raises:
    FileNotFoundError, ValueError: a missing or malformed file (one line).
  """
  gt = coco_format.load_json(ground_truth, "--ground_truth")
  coco_format.check_annotation_file(gt, ground_truth)
  cat = coco_format.keypoint_category(gt, ground_truth)
  sig, source = coco_format.oks_sigmas(cat["keypoints"], sigmas)
  gt, area = ground_truth_for_eval(gt, cat, ground_truth, box_area=source == "crowdpose")
  dts = read_results(results, gt, cat)
  return scores(gt, dts, cat, (sig, source), area, thresholds=thresholds)


def scores(
  gt: dict,
  dts: list[dict],
  cat: dict,
  sigmas: tuple[np.ndarray, str],
  area: str,
  *,
  thresholds: Sequence[float] | None = PCK_THRESHOLDS,
) -> dict:
  """`evaluate`'s result of ground truth and results held in memory, both checked:
  `gt` as `ground_truth_for_eval` returns it (with its `area`), `dts` as
  `read_results` returns them, `sigmas` as `coco_format.oks_sigmas` returns them.
  The files' path and the OKS evaluator's (`evaluators.oks`) share it, so their
  numbers are the same computation. `thresholds` None: no PCK."""
  sig, source = sigmas
  cocoeval = run_cocoeval(gt, dts, cat["id"], sig)
  out = {
    "stats": dict(zip(STAT_NAMES, (float(v) for v in cocoeval.stats), strict=True)),
    "summary": cocoeval.summary_text,
    "sigmas": [float(v) for v in sig],
    "sigmas_source": source,
    "area": area,
    "num_results": len(dts),
    "num_people": sum(not g["iscrowd"] and g["num_keypoints"] > 0 for g in gt["annotations"]),
    "category_id": cat["id"],
  }
  if thresholds is not None:
    out["pck"] = pck_of_matches(cocoeval, cat, thresholds)
  if source == "crowdpose" and all("crowdIndex" in im for im in gt["images"]):
    out["crowd_index"] = crowd_index_ap(cocoeval, gt)
  return out


def ground_truth_for_eval(gt: dict, cat: dict, path, *, box_area: bool) -> tuple[dict, str]:
  """A copy of the ground truth holding the keypoint category's annotations, checked.

  `iscrowd` defaults to 0 and `num_keypoints` to the count of v > 0 (pycocotools
  reads both); `area` becomes 0.53 · w · h of the box when `box_area` or when an
  annotation lacks it (CrowdPose's files have none).

  Returns:
    (the copy, 'box053' or 'annotation').

  Raises:
    ValueError: an annotation without an integer id, 3·K keypoint numbers, a
      bbox or an image_id among the images (naming the file and the field).
  """
  k = len(cat["keypoints"])
  for i, im in enumerate(gt["images"]):
    if not isinstance(im, dict) or "id" not in im:
      raise ValueError(f"{path}: images[{i}]: not an object with an 'id'")
  image_ids = {im["id"] for im in gt["images"]}
  anns = []
  for i, ann in enumerate(gt["annotations"]):
    if not isinstance(ann, dict) or ann.get("category_id") != cat["id"]:
      continue
    where = f"{path}: annotations[{i}]"
    kp = ann.get("keypoints")
    if not isinstance(ann.get("id"), int):
      raise ValueError(f"{where}.id: missing or not an integer")
    if not isinstance(kp, list) or len(kp) != 3 * k or not all(_finite(v) for v in kp):
      raise ValueError(f"{where}.keypoints: expected 3 × {k} numbers")
    if coco_format.bbox_problem(ann.get("bbox")):
      raise ValueError(f"{where}.bbox: {coco_format.bbox_problem(ann.get('bbox'))}")
    if ann.get("image_id") not in image_ids:
      raise ValueError(f"{where}.image_id: {ann.get('image_id')!r} is not among the images")
    labelled = sum(v > 0 for v in kp[2::3])
    anns.append(
      {
        **ann,
        "iscrowd": int(bool(ann.get("iscrowd", 0))),
        "num_keypoints": ann.get("num_keypoints", labelled),
      }
    )
  box_area = box_area or not all(_finite(a.get("area")) for a in anns)
  if box_area:
    for a in anns:
      a["area"] = coco_format.CROWDPOSE_AREA_FACTOR * a["bbox"][2] * a["bbox"][3]
  return {**gt, "annotations": anns}, "box053" if box_area else "annotation"


def read_results(path: str | Path, gt: dict, cat: dict) -> list[dict]:
  """The results file's entries, checked: [{image_id, category_id, keypoints, score}]
  (other fields are dropped: COCO's keypoint results have none, and a `bbox` would
  make pycocotools read them as box results).

  Raises:
    ValueError: not a non-empty list, or an entry with an image_id not among the
      ground truth's images, another category, not 3·K finite keypoint numbers, or
      no finite score (one line naming the file, the entry and the field).
  """
  data = coco_format.load_json(path, "--predictions")
  if not isinstance(data, list) or not data:
    what = "an empty list" if data == [] else f"a {type(data).__name__}"
    raise ValueError(f"{path}: expected a list of keypoint results, got {what}")
  k = len(cat["keypoints"])
  image_ids = {im.get("id") for im in gt["images"] if isinstance(im, dict)}
  out = []
  for i, r in enumerate(data):
    where = f"{path}: [{i}]"
    if not isinstance(r, dict):
      raise ValueError(f"{where}: not an object")
    if r.get("image_id") not in image_ids:
      raise ValueError(
        f"{where}.image_id: {r.get('image_id')!r} is not among the ground truth's images"
      )
    if r.get("category_id") != cat["id"]:
      raise ValueError(
        f"{where}.category_id: {r.get('category_id')!r} is not the keypoint category {cat['id']}"
      )
    kp = r.get("keypoints")
    if not isinstance(kp, list) or len(kp) != 3 * k or not all(_finite(v) for v in kp):
      n = len(kp) if isinstance(kp, list) else type(kp).__name__
      raise ValueError(f"{where}.keypoints: {n} values; expected 3 × {k} finite numbers")
    if not _finite(r.get("score")):
      raise ValueError(f"{where}.score: {r.get('score')!r} is not a finite number")
    out.append(
      {key: copy.deepcopy(r[key]) for key in ("image_id", "category_id", "keypoints", "score")}
    )
  return out


def _finite(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def run_cocoeval(gt: dict, dts: list[dict], category_id, sigmas: np.ndarray):
  """pycocotools' `COCOeval(iouType="keypoints")` evaluated, accumulated and summarized,
  its printing kept in `.summary_text` (the ten lines)."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(dts)
    e = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    e.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    e.params.catIds = [category_id]
    e.evaluate()
    e.accumulate()
  text = io.StringIO()
  with contextlib.redirect_stdout(text):
    e.summarize()
  e.summary_text = text.getvalue().rstrip("\n")
  return e


def pck_of_matches(cocoeval, cat: dict, thresholds: Sequence[float]) -> dict:
  """PCK tables of the results matched to people by OKS (module docstring)."""
  names = cat["keypoints"]
  try:
    skeleton = coco_format.make_skeleton(names, (), ())
  except ValueError as e:
    return {"note": f"no PCK: {e}"}
  gts, preds = [], []
  for (img, cid), ious in cocoeval.ious.items():
    people = cocoeval._gts[img, cid]
    dts = sorted(cocoeval._dts[img, cid], key=lambda d: -d["score"])  # as computeOks
    matched = _greedy_match(np.asarray(ious), [bool(g["ignore"]) for g in people])
    for j, g in enumerate(people):
      if g["ignore"]:
        continue
      gts.append(np.asarray(g["keypoints"], np.float64).reshape(-1, 3))
      d = matched.get(j)
      kp = (
        np.asarray(dts[d]["keypoints"], np.float64).reshape(-1, 3)[:, :2] if d is not None else None
      )
      preds.append(np.full((len(names), 2), np.nan) if kp is None else kp)
  if not gts:
    return {"note": "no PCK: no person to score"}
  gt = np.stack(gts)
  valid = gt[..., 2] > 0
  torso = joints_lib.torso_size(gt[..., :2], valid, skeleton)
  tables = metrics.pck_tables(
    np.stack(preds), gt[..., :2], valid, torso, skeleton, thresholds, coco_format.pools(skeleton)
  )
  return {
    "metric": "PCK (torso)",
    "num_examples": int((torso > 0).sum()),
    "tables": {f"{t:g}": table for t, table in tables.items()},
  }


def _greedy_match(ious: np.ndarray, ignore: list[bool]) -> dict[int, int]:
  """person index → result index: results in order, each to the free, scored person
  of highest OKS > 0."""
  out: dict[int, int] = {}
  if ious.size == 0:
    return out
  free = np.array([not i for i in ignore])
  for d in range(ious.shape[0]):
    o = np.where(free, ious[d], -1.0)
    j = int(np.argmax(o))
    if o[j] > 0:
      out[j] = d
      free[j] = False
  return out


def crowd_index_ap(cocoeval, gt: dict) -> dict:
  """CrowdPose's AP easy / medium / hard: the images split by `crowdIndex`, each
  evaluated again, the mean of precision over IoU and recall thresholds (area 'all'),
  as crowdposetools' `get_type_result` computes it (−1 for a split without people)."""
  lo, hi = CROWD_INDEX_BOUNDS
  groups = {"easy": [], "medium": [], "hard": []}
  for im in gt["images"]:
    c = im["crowdIndex"]
    groups["easy" if c < lo else "medium" if c < hi else "hard"].append(im["id"])
  out = {}
  e = copy.copy(cocoeval)
  e.params = copy.deepcopy(cocoeval.params)
  for name, ids in groups.items():
    e.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
      e.evaluate()
      e.accumulate()
    out[f"AP_{name}"] = (
      round(float(np.mean(e.eval["precision"][:, :, :, 0, :])), 4) if ids else -1.0
    )
  return out
