"""COCO-format person keypoints: the file layouts, joint names and flip pairs, OKS sigmas.

What the builder (`data_prep/coco_keypoints.py`), the scoring of results files
(`coco_eval`, `experiments.evaluate_predictions --dataset=coco`) and top-down
prediction (`experiments.predict --boxes`) share; docs/coco.md has the details.

Layouts (as pycocotools' `COCO` and `COCO.loadRes` read them):
  annotations  {images: [{id, file_name, width, height}], annotations: [{id,
               image_id, category_id, bbox [x, y, w, h], keypoints [x, y, v] × K,
               num_keypoints, iscrowd, area}], categories: [{id, name,
               keypoints [K names], skeleton [[a, b], ...] 1-based}]}
  results      [{image_id, category_id, keypoints [x, y, s] × K, score}]
  detections   [{image_id, category_id, bbox [x, y, w, h], score}]

Frames. Keypoints are pixel indices: (x, y), 0-based, pixel centres at integers
(the design frame, used as stored; v = 0: not labelled, x = y = 0; v = 1:
labelled, not visible; v = 2: labelled and visible). `bbox` is continuous (the
image spans [0, W] × [0, H], as segmentation polygons), so its corners map to the
design frame by −0.5 (`bbox_to_box`).

Joint names: a name's side and part come from its words (`side_and_part`):
`left_shoulder`, `Left Shoulder`, `Left-shoulder`, `LeftShoulder`, `LShoulder`,
`l_shoulder`, `shoulder_left`, `shoulder_l` are all (left, shoulder); a bare
`l`/`r` glued to a word (`lshoulder`, MPII's `lsho`, `rank`) pairs only when
the other side's name exists. Every named side needs its partner (`flip_pairs`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heatpose_jax.data import joints as joints_lib

# COCO 2017 person keypoints: the category of person_keypoints_*2017.json.
COCO_KEYPOINTS = (
  "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
  "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_SKELETON = (
  (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
  (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
# pycocotools' `Params.kpt_oks_sigmas` (cocoeval.py), COCO_KEYPOINTS order.
COCO_SIGMAS = (
  0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107,
  0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
# CrowdPose (Li et al., CVPR 2019): its files' keypoint names; their `skeleton` is
# COCO's 17-joint one, so the limbs are mmpose's `crowdpose.py` links (1-based).
CROWDPOSE_KEYPOINTS = (
  "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
  "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
  "right_ankle", "head", "neck",
)  # fmt: skip
CROWDPOSE_SKELETON = (
  (11, 9), (9, 7), (12, 10), (10, 8), (7, 8), (1, 7), (2, 8), (1, 2), (1, 3), (2, 4),
  (3, 5), (4, 6), (13, 14), (2, 14), (1, 14),
)  # fmt: skip
# crowdposetools/cocoeval.py `computeOks` (github.com/Jeff-sjtu/CrowdPose):
# [.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79] / 10.
CROWDPOSE_SIGMAS = (
  0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
  0.079, 0.079,
)  # fmt: skip
# CrowdPose's OKS scale: 0.53 × the box's w·h replaces the annotation's `area`.
CROWDPOSE_AREA_FACTOR = 0.53
# Per part, the values of both lists (a file with other names but these parts).
PART_SIGMAS = {
  "nose": 0.026, "eye": 0.025, "ear": 0.035, "shoulder": 0.079, "elbow": 0.072,
  "wrist": 0.062, "hip": 0.107, "knee": 0.087, "ankle": 0.089, "head": 0.079, "neck": 0.079,
}  # fmt: skip
# Spellings of the parts above (after the side is removed).
PART_ALIASES = {
  "sho": "shoulder", "shoulders": "shoulder", "elb": "elbow", "wri": "wrist",
  "hips": "hip", "kne": "knee", "ank": "ankle", "eyes": "eye", "ears": "ear",
  "head_top": "head", "top_head": "head", "headtop": "head", "top": "head",
  "upper_neck": "neck",
}  # fmt: skip
# The table's columns, in order, and the parts each pools; other parts get a column each.
TABLE_PARTS = (
  ("Head", ("nose", "eye", "ear", "head", "neck")),
  ("Shoulder", ("shoulder",)),
  ("Elbow", ("elbow",)),
  ("Wrist", ("wrist",)),
  ("Hip", ("hip",)),
  ("Knee", ("knee",)),
  ("Ankle", ("ankle",)),
)
UPPER_BODY_PARTS = ("shoulder", "elbow", "wrist")
_SIDES = {"left": "l", "l": "l", "right": "r", "r": "r"}


# --- files -----------------------------------------------------------------------


def load_json(path: str | Path, what: str) -> Any:
  """The parsed JSON file at `path`; one-line errors naming `what` (a flag) and the file.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not readable JSON.
  """
  path = Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"{what}={path}: no such file")
  try:
    with open(path, "rb") as f:
      return json.load(f)
  except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    raise ValueError(f"{what}={path}: not a readable JSON file ({one_line(e)})") from None


def one_line(e: Exception, limit: int = 160) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[: limit - 3] + "..."


def check_annotation_file(data: Any, path: str | Path) -> None:
  """Refuses a file that is not COCO's annotation layout (a top-level object with the
  lists `images`, `annotations`, `categories`): ValueError naming the file and field."""
  if not isinstance(data, dict):
    kind = (
      "a list (a results or detections file?)" if isinstance(data, list) else type(data).__name__
    )
    raise ValueError(f"{path}: expected COCO's annotation layout (an object), got {kind}")
  for key in ("images", "annotations", "categories"):
    if not isinstance(data.get(key), list):
      found = "missing" if key not in data else f"a {type(data[key]).__name__}, not a list"
      raise ValueError(f"{path}: field {key!r} is {found}")


def keypoint_category(data: dict, path: str | Path) -> dict:
  """The category whose people carry keypoints: `{id, name, keypoints, skeleton}`.

  The one category with a non-empty `keypoints` list (of several, the one named
  `person`). `keypoints` becomes a tuple of names; `skeleton` a tuple of 1-based
  index pairs, those outside 1..K dropped with a warning (CrowdPose's files carry
  COCO's 17-joint skeleton).

  Raises:
    ValueError: none, several, repeated or non-string names (naming the file and field).
  """
  cats = [
    (i, c) for i, c in enumerate(data["categories"]) if isinstance(c, dict) and c.get("keypoints")
  ]
  if len(cats) > 1:
    cats = [(i, c) for i, c in cats if c.get("name") == "person"] or cats
  if len(cats) != 1:
    found = "none" if not cats else ", ".join(f"categories[{i}]" for i, _ in cats)
    raise ValueError(f"{path}: categories: expected one with 'keypoints', found {found}")
  i, cat = cats[0]
  names = cat["keypoints"]
  where = f"{path}: categories[{i}].keypoints"
  if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"{where}: expected a list of names")
  if len(set(names)) != len(names):
    raise ValueError(
      f"{where}: repeats a name ({sorted(n for n in set(names) if names.count(n) > 1)})"
    )
  if "id" not in cat:
    raise ValueError(f"{path}: categories[{i}] has no 'id'")
  limbs, dropped = [], []
  for pair in cat.get("skeleton") or []:
    ok = isinstance(pair, list | tuple) and len(pair) == 2
    ok = ok and all(isinstance(v, int) and 1 <= v <= len(names) for v in pair)
    (limbs if ok else dropped).append(tuple(pair) if ok else pair)
  if dropped:
    logging.warning(
      "%s: categories[%d].skeleton: %d pair(s) outside 1..%d dropped (e.g. %s)",
      path, i, len(dropped), len(names), dropped[0],
    )  # fmt: skip
  return {"id": cat["id"], "name": cat.get("name", ""), "keypoints": tuple(names),
          "skeleton": tuple(dict.fromkeys(limbs))}  # fmt: skip


def bbox_to_box(bbox) -> np.ndarray:
  """COCO's `bbox` [x, y, w, h] (continuous) → (4,) float64 x1, y1, x2, y2, design frame."""
  x, y, w, h = (float(v) for v in bbox)
  return np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5])


def box_to_bbox(box) -> list[float]:
  """The inverse of `bbox_to_box`: x1, y1, x2, y2 (design frame) → COCO's [x, y, w, h]."""
  x1, y1, x2, y2 = (float(v) for v in box)
  return [x1 + 0.5, y1 + 0.5, x2 - x1, y2 - y1]


def bbox_problem(bbox) -> str | None:
  """Why a COCO `bbox` is unusable ('not 4 finite numbers', 'w or h not positive'), or None."""
  if not isinstance(bbox, list | tuple) or len(bbox) != 4:
    return "not 4 numbers"
  if not all(_number(v) for v in bbox):
    return "not 4 finite numbers"
  if not (bbox[2] > 0 and bbox[3] > 0):
    return "w or h not positive"
  return None


def _number(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# --- joint names -------------------------------------------------------------------


def words(name: str) -> list[str]:
  """Lower-case words of a joint name: separators `_ - . space`, and camelCase
  (`LShoulder` → l, shoulder; `RBigToe` → r, big, toe)."""
  spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
  return [w.lower() for w in re.split(r"[\s_\-.]+", spaced) if w]


def side_and_part(name: str) -> tuple[str, str]:
  """(side 'l' | 'r' | '', part) of a joint name: the side word first or last
  (`left`, `right`, `l`, `r`), the part the other words joined by `_`."""
  w = words(name)
  if len(w) > 1 and w[0] in _SIDES:
    return _SIDES[w[0]], "_".join(w[1:])
  if len(w) > 1 and w[-1] in _SIDES:
    return _SIDES[w[-1]], "_".join(w[:-1])
  return "", "_".join(w)


def canonical_part(part: str) -> str:
  """A part's common spelling (`PART_ALIASES`: `sho` → shoulder, `head_top` → head)."""
  return PART_ALIASES.get(part, part)


def joint_parts(names: Sequence[str]) -> list[tuple[str, str]]:
  """(side, canonical part) of every name, glued sides (`lsho`/`rsho`) included
  where both spellings exist."""
  out = [side_and_part(n) for n in names]
  bare = {n.lower(): i for i, (n, (s, _)) in enumerate(zip(names, out, strict=True)) if not s}
  for low, i in bare.items():
    if len(low) > 2 and low[0] in "lr" and ({"l": "r", "r": "l"}[low[0]] + low[1:]) in bare:
      out[i] = (low[0], low[1:])
  return [(s, canonical_part(p)) for s, p in out]


def derive_flip_pairs(names: Sequence[str], where: str) -> tuple[tuple[str, str], ...]:
  """(left, right) name pairs from the names' sides (module docstring).

  Raises:
    ValueError: a sided name without its partner, or two names for one side of a
      part (one line naming `where` and the name).
  """
  parts = joint_parts(names)
  by_key: dict[tuple[str, str], str] = {}
  for name, key in zip(names, parts, strict=True):
    if key[0] and key in by_key:
      raise ValueError(
        f"{where}: {by_key[key]!r} and {name!r} name the same joint ({key[0]}, {key[1]})"
      )
    by_key[key] = name
  pairs = []
  for name, (side, part) in zip(names, parts, strict=True):
    if not side:
      continue
    other = {"l": "r", "r": "l"}[side]
    if (other, part) not in by_key:
      want = {"l": "right", "r": "left"}[side]
      raise ValueError(
        f"{where}: {name!r} has no {want} partner; name every pair with "
        "--flip_pairs=LEFT:RIGHT,... (or --flip_pairs=none)"
      )
    if side == "l":
      pairs.append((name, by_key[(other, part)]))
  return tuple(pairs)


def parse_flip_pairs(text: str, names: Sequence[str], where: str) -> tuple[tuple[str, str], ...]:
  """`--flip_pairs`: 'A:B,C:D' (A, B joint names), or 'none' for no pairs.

  Raises:
    ValueError: a malformed pair, an unknown name, or a name in two pairs.
  """
  if text.strip().lower() == "none":
    return ()
  pairs, seen = [], set()
  for item in filter(None, (t.strip() for t in text.split(","))):
    a, sep, b = (s.strip() for s in item.partition(":"))
    if not sep or not a or not b or a == b:
      raise ValueError(f"{where}: {item!r} is not LEFT:RIGHT (two different joint names)")
    for n in (a, b):
      if n not in names:
        raise ValueError(f"{where}: {n!r} is not a joint of the file ({', '.join(names)})")
      if n in seen:
        raise ValueError(f"{where}: {n!r} is in two pairs")
      seen.add(n)
    pairs.append((a, b))
  return tuple(pairs)


class UnknownSigmas(ValueError):
  """Joints whose part has no OKS sigma; `unknown`: their names (callers word the
  error for their own flag or field)."""

  def __init__(self, unknown: Sequence[str], num_joints: int):
    self.unknown = list(unknown)
    super().__init__(
      f"no OKS sigma known for {', '.join(map(repr, self.unknown))}: give all {num_joints} "
      "with --sigmas=V1,V2,..."
    )


def oks_sigmas(names: Sequence[str], preset: str = "") -> tuple[np.ndarray, str]:
  """OKS sigmas of the joints `names` and where they come from.

  Args:
    names: the keypoint names, file order (K).
    preset: 'coco' (pycocotools' 17), 'crowdpose' (CrowdPose's 14), K numbers
      separated by commas, or '' to choose by the names: COCO's or CrowdPose's
      list where the parts are theirs in their order, else each part's value
      (`PART_SIGMAS`).

  Returns:
    ((K,) float64 sigmas, 'coco' | 'crowdpose' | 'parts' | 'given').

  Raises:
    ValueError: a list of the wrong length or not numbers; `UnknownSigmas`: a part
      without a value.
  """
  parts = [p for _, p in joint_parts(names)]
  lists = {
    "coco": (COCO_KEYPOINTS, COCO_SIGMAS),
    "crowdpose": (CROWDPOSE_KEYPOINTS, CROWDPOSE_SIGMAS),
  }
  if not preset:
    for label, (known, sig) in lists.items():
      if parts == [p for _, p in joint_parts(known)]:
        return np.array(sig), label
  elif preset in lists:
    sig = lists[preset][1]
    if len(sig) != len(names):
      raise ValueError(f"--sigmas={preset}: {len(sig)} values for {len(names)} joints")
    return np.array(sig), preset
  else:
    try:
      given = np.array([float(v) for v in preset.split(",")])
    except ValueError:
      raise ValueError(
        f"--sigmas={preset}: expected coco, crowdpose or {len(names)} numbers"
      ) from None
    if len(given) != len(names) or not (np.isfinite(given) & (given > 0)).all():
      raise ValueError(f"--sigmas: {len(given)} values for {len(names)} joints (each > 0)")
    return given, "given"
  unknown = [n for n, p in zip(names, parts, strict=True) if p not in PART_SIGMAS]
  if unknown:
    raise UnknownSigmas(unknown, len(names))
  return np.array([PART_SIGMAS[p] for p in parts]), "parts"


def make_skeleton(
  names: Sequence[str],
  limbs: Sequence[tuple[int, int]],
  flip_pairs: Sequence[tuple[str, str]],
  name: str = "coco",
) -> joints_lib.Skeleton:
  """The `joints.Skeleton` of a keypoint category: every joint annotated, predicted and
  scored in file order; the table's columns by part (`TABLE_PARTS`); the torso
  normalizer ‖right shoulder − left hip‖ (as FLIC and LSP).

  Args:
    names: keypoint names, file order. limbs: 1-based index pairs (the file's
    `skeleton`). flip_pairs: (left, right) names. name: the skeleton's (dataset's) name.

  Raises:
    ValueError: no right shoulder or no left hip among the names.
  """
  names = tuple(names)
  parts = joint_parts(names)
  find = {key: n for n, key in zip(names, parts, strict=True)}
  torso = (find.get(("r", "shoulder")), find.get(("l", "hip")))
  if None in torso:
    raise ValueError(
      f"no right shoulder and left hip among the joints ({', '.join(names)}): PCK's torso "
      "normalizer needs both"
    )
  return joints_lib.Skeleton(
    name=name,
    annotated=names,
    model_joints=names,
    flip_pairs=tuple((a, b) for a, b in flip_pairs),
    torso=torso,
    scored=names,
    table=table_columns(names),
    limbs=tuple((names[a - 1], names[b - 1]) for a, b in limbs),
  )


def table_columns(names: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """(column, joint names) by part: `TABLE_PARTS`, then one column per other part."""
  parts = [p for _, p in joint_parts(names)]
  cols = [
    (c, tuple(n for n, p in zip(names, parts, strict=True) if p in ps)) for c, ps in TABLE_PARTS
  ]
  known = {p for _, ps in TABLE_PARTS for p in ps}
  for part in dict.fromkeys(p for p in parts if p not in known):
    title = part.replace("_", " ").title().replace(" ", "")
    cols.append((title, tuple(n for n, p in zip(names, parts, strict=True) if p == part)))
  return tuple((c, js) for c, js in cols if js)


def pools(skeleton: joints_lib.Skeleton) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """The pooled columns: UBody (shoulders, elbows, wrists), where there are some, and Total."""
  parts = dict(
    zip(skeleton.model_joints, (p for _, p in joint_parts(skeleton.model_joints)), strict=True)
  )
  upper = tuple(n for n in skeleton.model_joints if parts[n] in UPPER_BODY_PARTS)
  return ((("UBody", upper),) if upper else ()) + (("Total", tuple(skeleton.scored)),)


def read_boxes(
  path: str | Path, what: str = "--boxes"
) -> tuple[list[dict], list[str], dict | None]:
  """Person boxes to predict on (top-down).

  Args:
    path: a COCO detection-results file (a list of {image_id, category_id, bbox
      [x, y, w, h], score}, as the `*_det_AP_*.json` person detections), or an
      annotation file (an object): its people with labelled keypoints (not crowd),
      score 1 (top-down on ground-truth boxes).
    what: the flag, for messages.

  Returns:
    (boxes [{image_id, category_id, box (4,) float64 x1, y1, x2, y2 design frame,
    score}], problems (one line per entry skipped: `[i].field: why`), the
    annotation data or None).

  Raises:
    FileNotFoundError, ValueError: a missing file, or neither layout (one line).
  """
  data = load_json(path, what)
  if isinstance(data, dict):
    check_annotation_file(data, path)
    cat_id = keypoint_category(data, path)["id"]
    entries = [
      (f"annotations[{i}]", {**a, "score": 1.0})
      for i, a in enumerate(data["annotations"])
      if isinstance(a, dict)
      and a.get("category_id") == cat_id
      and not a.get("iscrowd")
      and isinstance(a.get("keypoints"), list)
      and any(_number(v) and v > 0 for v in a["keypoints"][2::3])
    ]
  elif isinstance(data, list):
    entries = [(f"[{i}]", d) for i, d in enumerate(data)]
  else:
    raise ValueError(f"{what}={path}: expected a list of detections or an annotation file")
  boxes, problems = [], []
  for label, d in entries:
    bad = None if isinstance(d, dict) else "not an object"
    bad = bad or (None if "image_id" in d else "no image_id")
    bad = bad or (None if _number(d.get("score")) else f"score {d.get('score')!r} not a number")
    bad = bad or (f"bbox {bbox_problem(d.get('bbox'))}" if bbox_problem(d.get("bbox")) else None)
    if bad:
      problems.append(f"{label}: {bad}")
      continue
    keep = {k: d.get(k) for k in ("image_id", "category_id")}
    boxes.append({**keep, "box": bbox_to_box(d["bbox"]), "score": float(d["score"])})
  return boxes, problems, data if isinstance(data, dict) else None
