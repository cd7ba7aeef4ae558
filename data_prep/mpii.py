"""MPII Human Pose (Andriluka et al., CVPR 2014) as a TFDS builder: `mpii`.

Manual dir (see `data_prep/manual_dirs.md`): `mpii_human_pose_v1_u12_1.mat` (struct
`RELEASE`), `images/`, and optionally a validation split file, `valid.h5`
(stacked hourglass) or `valid.json` (HRNet). Or, without the .mat, the JSON layout
of the HRNet and mmpose codebases (`JSON_FILES`, below).

Splits, each in annotation-file order (image, then rectangle):
  * `train`: every annotated person (an `annorect` with `annopoints`, `scale` and
    `objpos`) of the `img_train == 1` images, minus the validation persons;
  * `validation`: Tompson et al.'s 2958 persons read from the split file; without
    one, a deterministic held-out set of whole images (a hash of the image name,
    `FALLBACK_VALIDATION_FRACTION` of the images), with a warning;
  * `test`: one example per rectangle with `objpos` and `scale` in the
    `img_train == 0` images; no joints (valid False), no head box.

Split files: `valid.h5`'s `index` and `person` are 0-based (pose-hg-train's
`convert_annot.py` writes Python loop indices; the real file has 2958 rows sorted
by `index`, `imgname` as |S13 bytes, which we check against annolist); its
`center`/`scale` are crop values (y + 15·scale, scale × 1.25) and are not used.

Frames: MATLAB 1-based pixels → 0-based with `- 1` (points, `objpos`, head box).
Per person: `joints` (16, 2) in joint-id order, `joints_valid` = the point is
present, `joints_visible` = present and `is_visible` is not 0 (a missing or
empty `is_visible` counts as visible, as in pose-hg-train's `mpii.py`),
`head_box` = (x1, y1, x2, y2), `head_size` = 0.6 · its diagonal, `center` =
`objpos`, `scale` = `scale`, and `torso_box` a box centred on `objpos` of width
`0.2 · 200 · scale` and height `0.3 · 200 · scale` (a torso's share of a person's
height, as FLIC's torso boxes): derived from `objpos`/`scale` only, because the
test persons have nothing else.

Checks (`docs/data.md`): a person (or test rectangle) is skipped when its `scale`
is not positive and finite, its `objpos` lies more than an image side outside the
image, its head box is upside down (x2 <= x1 or y2 <= y1) or not finite, or an
annotated point is NaN or infinite; a point more than an image side outside the
image is marked invalid.

The JSON layout (HRNet's `data/mpii/annot/{train,valid,test}.json`, mmpose's
`annotations/mpii_{train,val,test}.json`; in the manual dir, or its `annot/` or
`annotations/` folder): a list of persons {`image`, `center` [x, y], `scale`,
`joints` [[x, y]] × 16, `joints_vis` [16]}, in MPII's joint-id order. Conventions,
read from the loaders: `center` is MPII's `objpos` and `joints` its points,
both 1-based (MATLAB) — HRNet's `lib/dataset/mpii.py` and mmpose 0.x subtract 1
from both (mmpose 1.x subtracts 1 from the centre only and keeps the joints in the
file's frame); `scale` is MPII's (person height / 200 px; the loaders' `c[1] += 15
· s`, `s *= 1.25` are crop choices, not the annotation's); `joints_vis` is 1 for
every labelled joint, occluded or not (HRNet's authors, microsoft/human-pose-
estimation.pytorch#7), so `joints_visible` = `joints_valid` there; a test entry has
no `joints`. We subtract 1 from both, as HRNet. No head boxes: the validation
split takes them from `gt_valid.mat` / `mpii_gt_val.mat` (`headboxes_src`, the
same persons in the same order) where it is there; `image_index` and
`person_index` are −1 and `activity` '' (the layout has none).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import scipy.io as sio
import tensorflow_datasets as tfds

from data_prep import common
from heatpose_jax.data import joints as joints_lib

ANNOTATIONS = "mpii_human_pose_v1_u12_1.mat"
SPLIT_FILES = ("valid.h5", "valid.json")
SKELETON = joints_lib.SKELETONS["mpii"]
NUM_JOINTS = len(SKELETON.annotated)
# Fraction of train images held out when no split file is given (about the 2958
# of ~29k persons of Tompson et al.'s split).
FALLBACK_VALIDATION_FRACTION = 0.1
# Torso box (width, height) as fractions of the person height 200 · scale.
TORSO_BOX_FRACTIONS = (0.2, 0.3)
# valid.json centres are `objpos`; they match within this many pixels.
JSON_CENTER_TOLERANCE = 2.0
# The JSON layout's files per split (HRNet's names, mmpose's), and where they may be.
JSON_FILES = {
  "train": ("train.json", "mpii_train.json"),
  "validation": ("valid.json", "mpii_val.json"),
  "test": ("test.json", "mpii_test.json"),
}
JSON_HEAD_BOXES = ("gt_valid.mat", "mpii_gt_val.mat")
JSON_FOLDERS = (".", "annot", "annotations")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
From http://human-pose.mpi-inf.mpg.de/#download get the images
(mpii_human_pose_v1.tar.gz) and the annotations (mpii_human_pose_v1_u12_2.zip).
The manual dir must hold `mpii_human_pose_v1_u12_1.mat` and `images/` (the JPEGs).
For Tompson et al.'s 2958-person validation split also put there `valid.h5` (from
https://github.com/umich-vl/pose-hg-train, data/mpii/annot/valid.h5) or
`valid.json` (from https://github.com/leoxiaobin/deep-high-resolution-net.pytorch,
data/mpii/annot/valid.json); without one, a hashed 10% of the images is held out.
"""


def _as_list(value) -> list:
  """A MATLAB struct array, single struct, or empty value as a Python list.

  `loadmat(squeeze_me=True)` turns a 1×1 struct into a bare `mat_struct`, a 1×k
  one into an object array and `[]` into an empty array.
  """
  if value is None:
    return []
  if isinstance(value, np.ndarray):
    return list(value.ravel())
  return [value]


def _number(value) -> float | None:
  """A MATLAB scalar (number, '0'/'1' string, empty array) as float, or None."""
  if isinstance(value, str):
    value = value.strip()
    return float(value) if value else None
  arr = np.asarray(value)
  if arr.size == 0:
    return None
  item = arr.ravel()[0]
  return float(item.strip()) if isinstance(item, str) and item.strip() else float(item)


def _field(struct, name):
  """`struct.name`, or None when the struct lacks the field (ragged annotations)."""
  return getattr(struct, name, None)


def _person(rect) -> dict:
  """Parses one annotated `annorect` into 0-based arrays (see the module docstring)."""
  pts = np.zeros((NUM_JOINTS, 2), np.float64)
  valid = np.zeros(NUM_JOINTS, bool)
  visible = np.zeros(NUM_JOINTS, bool)
  problem = None
  for point in _as_list(_field(_field(rect, "annopoints"), "point")):
    jid = _number(_field(point, "id"))
    if jid is None or not 0 <= jid < NUM_JOINTS or jid != int(jid):
      problem = f"joint id out of range 0..{NUM_JOINTS - 1}"
      continue
    x, y = _number(_field(point, "x")), _number(_field(point, "y"))
    j = int(jid)
    pts[j] = [np.nan if x is None else x - 1.0, np.nan if y is None else y - 1.0]
    valid[j] = True
    vis = _number(_field(point, "is_visible"))
    visible[j] = vis is None or vis != 0
  return {"joints": pts, "joints_valid": valid, "joints_visible": visible, "problem": problem}


def _objpos_scale(rect):
  """(center (2,) 0-based, scale) of a rectangle, or None when either is missing."""
  objpos, scale = _field(rect, "objpos"), _number(_field(rect, "scale"))
  if objpos is None or isinstance(objpos, np.ndarray) or scale is None:
    return None
  x, y = _number(_field(objpos, "x")), _number(_field(objpos, "y"))
  if x is None or y is None:
    return None
  return np.array([x - 1.0, y - 1.0], np.float32), np.float32(scale)


def _head_box(rect) -> np.ndarray:
  """(4,) x1, y1, x2, y2 0-based, zeros when the rectangle has no head box."""
  vals = [_number(_field(rect, k)) for k in ("x1", "y1", "x2", "y2")]
  if any(v is None for v in vals):
    return np.zeros(4, np.float32)
  return np.asarray(vals, np.float32) - 1.0


def _rect_example(rect, is_train: bool) -> dict | None:
  """The example fields of one `annorect`, or None when it is no example.

  Training images: an annotated person (None without annopoints). Test images:
  `center`/`scale` only (None without objpos or scale).
  """
  pos = _objpos_scale(rect)
  if not is_train:
    if pos is None:
      return None
    problem = common.scale_problem(pos[1])
    return {"center": pos[0], "scale": pos[1], "problem": problem, "detail": _detail(problem, pos)}
  if not _as_list(_field(_field(rect, "annopoints"), "point")):
    return None
  person = {**_person(rect), "head_box": _head_box(rect)}
  if pos is None:
    person["problem"] = person["problem"] or "annotated person without objpos/scale"
    person["center"], person["scale"] = np.zeros(2, np.float32), np.float32(0.0)
  else:
    person["center"], person["scale"] = pos
  # The source fields first: `torso_box` derives from scale, `head_size` from the box.
  person["problem"] = (
    person["problem"]
    or common.scale_problem(person["scale"])
    or common.box_problem(person["head_box"], "head box")
    or common.check_joints(person["joints"], person["joints_valid"])
  )
  person["detail"] = _detail(person["problem"], pos, person["head_box"])
  return person


def _detail(problem: str | None, pos, head_box=None) -> str:
  """The source values behind a scale or head-box `problem` (1-based, as in the file)."""
  if problem == common.BAD_SCALE:
    return f"scale {pos[1]:g}"
  if problem and "head box" in problem:
    return f"head box {common.fmt(np.asarray(head_box) + 1)} (1-based)"
  return ""


def read_annotations(mat_path) -> tuple[list[str], list[dict], list[dict]]:
  """Parses MPII's `RELEASE` struct.

  Args:
    mat_path: path of `mpii_human_pose_v1_u12_1.mat`.

  Returns:
    `(image_names, train, test)`: the annolist image names; the annotated persons
    of the training images; the rectangles with objpos/scale of the test images.
    Each person is a dict with `image_index`, `person_index` (0-based annolist /
    annorect indices), `image_name`, `activity` (str, '' when none), `center`
    float32 (2,), `scale`, `head_box` float32 (4,), `joints` float64 (16, 2)
    (x, y) 0-based (NaN only where the file has NaN), `joints_valid`,
    `joints_visible` bool (16,), and `problem` (None or why it is unusable).

  Raises:
    FileNotFoundError, common.DataError: a missing or malformed annotation file.
  """
  mat_path = Path(mat_path)
  mat = common.load_mat(mat_path, "MPII", squeeze_me=True, struct_as_record=False)
  release = mat.get("RELEASE")
  for name in ("annolist", "img_train"):
    if _field(release, name) is None:
      raise common.DataError(f"{mat_path}: no struct RELEASE with field {name!r}")
  annolist = _as_list(release.annolist)
  img_train = np.atleast_1d(np.asarray(release.img_train)).ravel()
  if len(img_train) != len(annolist):
    raise common.DataError(
      f"{mat_path}: RELEASE.img_train has {len(img_train)} entries, annolist {len(annolist)}"
    )
  acts = _as_list(_field(release, "act"))

  names, train, test = [], [], []
  unannotated = 0
  for i, anno in enumerate(annolist):
    name = common.mat_text(_field(_field(anno, "image"), "name"))
    names.append(name)
    act = acts[i] if i < len(acts) else None
    activity = common.mat_text(_field(act, "act_name")) if act is not None else ""
    is_train = img_train[i] == 1
    for r, rect in enumerate(_as_list(_field(anno, "annorect"))):
      try:
        parsed = _rect_example(rect, is_train)
      except (ValueError, TypeError) as e:
        raise common.DataError(
          f"{mat_path}: annolist({i + 1}).annorect({r + 1}) is malformed ({e})"
        ) from e
      if parsed is None:
        unannotated += 1 if is_train else 0
        continue
      base = {"image_index": i, "person_index": r, "image_name": name, "activity": activity}
      (train if is_train else test).append({**base, **parsed})
  logging.info(
    "mpii: %d images, %d annotated training persons, %d training rectangles without"
    " annopoints (not examples), %d test rectangles",
    len(names),
    len(train),
    unannotated,
    len(test),
  )
  return names, train, test


def _h5_names(values) -> list[str]:
  """Image names stored as strings or as zero-padded character codes (hourglass)."""
  out = []
  for v in values:
    if isinstance(v, bytes | str):
      out.append(v.decode() if isinstance(v, bytes) else v)
    else:
      out.append("".join(chr(int(c)) for c in np.ravel(v) if int(c) != 0))
  return out


def validation_keys(path: Path, names: list[str], train: list[dict]) -> set[tuple[int, int]]:
  """The (image_index, person_index) keys of a split file's persons.

  `valid.h5` (stacked hourglass): datasets `index` (0-based annolist index) and
  `person` (0-based annorect index), checked against `imgname` when present.
  `valid.json` (HRNet): a list of {image, center, ...}; `center` is MPII's
  1-based `objpos`, matched to the nearest person of that image.
  """
  keys: set[tuple[int, int]] = set()
  unmatched = []
  if path.suffix == ".h5":
    try:
      with h5py.File(path, "r") as f:
        if "index" not in f or "person" not in f:
          raise common.DataError(f"{path}: needs datasets 'index' and 'person' (found {sorted(f)})")
        index = np.asarray(f["index"][()]).astype(int).ravel()
        person = np.asarray(f["person"][()]).astype(int).ravel()
        imgname = _h5_names(f["imgname"][()]) if "imgname" in f else None
    except OSError as e:
      raise common.DataError(f"{path}: not a readable HDF5 file ({e})") from e
    if len(index) != len(person):
      raise common.DataError(f"{path}: 'index' has {len(index)} rows but 'person' {len(person)}")
    for k, (i, p) in enumerate(zip(index, person, strict=True)):
      if not 0 <= i < len(names):
        raise common.DataError(f"{path}: row {k}: index {i} outside annolist (0..{len(names) - 1})")
      if imgname is not None and imgname[k] != names[i]:
        raise common.DataError(
          f"{path}: row {k}: imgname {imgname[k]!r} but annolist[{i}] (0-based) is"
          f" {names[i]!r}; `index` must be the 0-based annolist index"
        )
      keys.add((int(i), int(p)))
  elif path.suffix == ".json":
    try:
      entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise common.DataError(f"{path}: not a readable JSON file ({e})") from e
    by_name = collections.defaultdict(list)
    for p in train:
      by_name[p["image_name"]].append(p)
    for k, e in enumerate(entries):
      try:
        name, center = e["image"], np.asarray(e["center"], np.float64) - 1.0
      except (KeyError, TypeError) as err:
        raise common.DataError(f"{path}: entry {k} lacks 'image'/'center' ({err})") from err
      cands = by_name.get(name, [])
      dists = [np.hypot(*(p["center"] - center)) for p in cands]
      if not dists or min(dists) > JSON_CENTER_TOLERANCE:
        unmatched.append(f"entry {k} ({name}, center {list(center + 1)})")
        continue
      p = cands[int(np.argmin(dists))]
      keys.add((p["image_index"], p["person_index"]))
  else:
    raise common.DataError(f"{path}: split file must be .h5 or .json")
  known = {(p["image_index"], p["person_index"]) for p in train}
  unmatched += [f"(index {i}, person {p})" for i, p in sorted(keys - known)]
  if unmatched:
    logging.warning(
      "mpii: %d of the %s persons match no annotated training person: %s",
      len(unmatched),
      path.name,
      ", ".join(unmatched[:20]) + (" ..." if len(unmatched) > 20 else ""),
    )
  return keys & known


def fallback_is_validation(image_name: str) -> bool:
  """Deterministic held-out images: a hash of the name, not Python's salted hash()."""
  h = int(hashlib.md5(image_name.encode()).hexdigest()[:8], 16)
  return h % 10_000 < FALLBACK_VALIDATION_FRACTION * 10_000


def split_persons(root: Path, names: list[str], train: list[dict]):
  """(train, validation) persons, each in file order."""
  split_file = next((root / f for f in SPLIT_FILES if (root / f).is_file()), None)
  if split_file is None:
    logging.warning(
      "mpii: no split file (%s) in %s; holding out a hashed %.0f%% of the training"
      " images as `validation`. For Tompson et al.'s 2958-person split get valid.h5"
      " from https://github.com/umich-vl/pose-hg-train (data/mpii/annot/valid.h5) or"
      " valid.json from https://github.com/leoxiaobin/deep-high-resolution-net.pytorch"
      " (data/mpii/annot/valid.json).",
      " or ".join(SPLIT_FILES),
      root,
      100 * FALLBACK_VALIDATION_FRACTION,
    )
    is_val = [fallback_is_validation(p["image_name"]) for p in train]
  else:
    keys = validation_keys(split_file, names, train)
    is_val = [(p["image_index"], p["person_index"]) in keys for p in train]
    logging.info("mpii: %d validation persons from %s", len(keys), split_file)
  return (
    [p for p, v in zip(train, is_val, strict=True) if not v],
    [p for p, v in zip(train, is_val, strict=True) if v],
  )


def json_files(root: Path | None) -> dict[str, Path]:
  """split → file of the JSON layout in `root` (`JSON_FILES`, `JSON_FOLDERS`): {} unless
  both train and validation are there and the .mat is not."""
  if root is None or (root / ANNOTATIONS).exists():
    return {}
  found = {}
  for split, names in JSON_FILES.items():
    path = next(
      (root / d / n for d in JSON_FOLDERS for n in names if (root / d / n).is_file()), None
    )
    if path is not None:
      found[split] = path
  return found if {"train", "validation"} <= found.keys() else {}


def json_person(entry, k: int, path: Path, head_box, *, test: bool = False) -> dict:
  """One person of a JSON-layout file, parsed as `read_annotations` parses a rectangle
  (0-based; `problem` says why it is unusable, `where` names it). A `test` person has
  objpos and scale only, whatever joints its file holds (the loaders ignore them)."""
  where = f"{path.name}[{k}]"
  base = {"image_index": -1, "person_index": -1, "activity": "", "where": where}
  try:
    name, scale = str(entry["image"]), float(entry["scale"])
    center = np.asarray(entry["center"], np.float64).reshape(2)
  except (KeyError, TypeError, ValueError) as e:
    return {**base, "image_name": "", "problem": "malformed entry", "detail": f"{e!r}"}
  person = {**base, "image_name": name, "center": (center - 1).astype(np.float32)}
  person["scale"] = np.float32(scale)
  if center[0] == -1:  # the loaders' marker of a person without objpos
    return {**person, "problem": "annotated person without objpos/scale", "detail": ""}
  if test or "joints" not in entry:  # a test person: objpos and scale only
    problem = common.scale_problem(scale)
    return {**person, "problem": problem, "detail": f"scale {scale:g}" if problem else ""}
  try:
    pts = np.asarray(entry["joints"], np.float64).reshape(NUM_JOINTS, 2) - 1.0
    valid = np.asarray(entry["joints_vis"], np.float64).reshape(NUM_JOINTS) > 0
  except (KeyError, TypeError, ValueError) as e:
    return {**person, "problem": "malformed joints", "detail": f"{e!r}"}
  person.update(joints=pts, joints_valid=valid, joints_visible=valid.copy(), head_box=head_box)
  person["problem"] = (
    common.scale_problem(scale)
    or common.box_problem(head_box, "head box")
    or common.check_joints(pts, valid)
  )
  person["detail"] = _detail(person["problem"], (center, scale), head_box)
  return person


def read_json_split(
  path: Path, head_boxes: np.ndarray | None = None, *, test: bool = False
) -> list[dict]:
  """The persons of one JSON-layout file, in file order (`json_person`).

  Args:
    path: the file. head_boxes: (N, 4) 0-based x1, y1, x2, y2 of its N persons, or None.
    test: the test split's file (no joints are read).

  Raises:
    common.DataError: not a JSON list, or a head-box count other than the persons'.
  """
  try:
    entries = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise common.DataError(f"{path}: not a readable JSON file ({e})") from e
  if not isinstance(entries, list):
    raise common.DataError(f"{path}: expected a list of persons, got {type(entries).__name__}")
  if head_boxes is not None and len(head_boxes) != len(entries):
    raise common.DataError(f"{path}: {len(entries)} persons but {len(head_boxes)} head boxes")
  zeros = np.zeros(4, np.float32)
  return [
    json_person(e, k, path, zeros if head_boxes is None else head_boxes[k], test=test)
    for k, e in enumerate(entries)
  ]


def json_head_boxes(folder: Path) -> np.ndarray | None:
  """(N, 4) 0-based head boxes of the validation persons from HRNet's `gt_valid.mat`
  (mmpose: `mpii_gt_val.mat`), `headboxes_src` (2, 2, N) 1-based; None without one."""
  path = next((folder / n for n in JSON_HEAD_BOXES if (folder / n).is_file()), None)
  if path is None:
    return None
  try:
    boxes = np.asarray(sio.loadmat(path)["headboxes_src"], np.float64)
  except (KeyError, ValueError, NotImplementedError, OSError) as e:
    raise common.DataError(f"{path}: no readable 'headboxes_src' ({e!r})") from e
  if boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
    raise common.DataError(f"{path}: 'headboxes_src' has shape {boxes.shape}; expected (2, 2, N)")
  return (boxes.transpose(2, 0, 1).reshape(-1, 4) - 1.0).astype(np.float32)


def torso_box(center: np.ndarray, scale: float) -> np.ndarray:
  """(4,) x1, y1, x2, y2 of the torso box centred on `center` (see the docstring)."""
  half = np.asarray(TORSO_BOX_FRACTIONS) * 200.0 * scale / 2
  return np.concatenate([center - half, center + half]).astype(np.float32)


class Mpii(common.ArrayRecordBuilder):
  """MPII Human Pose: persons with 16 joints, head boxes, objpos and scale."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: 0-based joints, Tompson validation split."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    t = tfds.features.Tensor
    return common.dataset_info(
      self,
      description="MPII Human Pose persons, 16 joints in 0-based pixels.",
      features=common.common_features(
        NUM_JOINTS,
        image_name=t(shape=(), dtype=np.object_),
        image_index=t(shape=(), dtype=np.int64),
        person_index=t(shape=(), dtype=np.int64),
        activity=t(shape=(), dtype=np.object_),
      ),
      homepage="http://human-pose.mpi-inf.mpg.de/",
    )

  def _split_generators(self, dl_manager):
    try:
      files = json_files(Path(dl_manager.manual_dir))
    except AssertionError:  # no manual dir: `manual_paths` says so
      files = {}
    if files:
      return self._json_splits(dl_manager, files)
    root = common.manual_paths(dl_manager, "mpii", ANNOTATIONS, MANUAL_DOWNLOAD_INSTRUCTIONS)
    names, train, test = read_annotations(root / ANNOTATIONS)
    train, validation = split_persons(root, names, train)
    return {
      "train": self._generate_examples(root, train, "train"),
      "validation": self._generate_examples(root, validation, "validation"),
      "test": self._generate_examples(root, test, "test"),
    }

  def _json_splits(self, dl_manager, files: dict[str, Path]):
    """The splits of the JSON layout (module docstring)."""
    root = Path(dl_manager.manual_dir)
    first = files["train"].relative_to(root)
    common.manual_paths(dl_manager, "mpii", str(first), MANUAL_DOWNLOAD_INSTRUCTIONS)
    logging.info("mpii: the JSON layout: %s", ", ".join(str(p) for p in files.values()))
    heads = json_head_boxes(files["validation"].parent)
    return {
      split: self._generate_examples(
        root,
        read_json_split(path, heads if split == "validation" else None, test=split == "test"),
        split,
      )
      for split, path in files.items()
    }

  def _generate_examples(self, root: Path, persons: list[dict], split: str):
    skips = common.new_skip_counter(self, split)

    def candidates():
      cache = (None, None, None)  # (name, image, error): persons of an image are adjacent.
      for p in persons:
        where = p.get("where") or (
          f"annolist({p['image_index'] + 1}).annorect({p['person_index'] + 1}) {p['image_name']!r}"
        )
        if p["problem"]:
          skips.skip(p["problem"], where, p["detail"])
          continue
        if cache[0] != p["image_name"]:
          try:
            cache = (
              p["image_name"],
              common.read_image(root / common.IMAGES / p["image_name"]),
              None,
            )
          except (FileNotFoundError, ValueError) as e:
            cache = (p["image_name"], None, e)
        if cache[2] is not None:
          common.skip_image(skips, cache[2], where)
          continue
        data, hw = cache[1]
        if "joints" in p:
          joints, valid, problem = common.clean_joints(
            SKELETON, p["joints"], p["joints_valid"], hw, skips, where
          )
          if problem:
            skips.skip(problem, where)
            continue
          visible, head_box = p["joints_visible"] & valid, p["head_box"]
        else:  # test rectangles carry no joints.
          joints = np.zeros((NUM_JOINTS, 2), np.float32)
          valid = visible = np.zeros(NUM_JOINTS, bool)
          head_box = np.zeros(4, np.float32)
        ex = {
          "image": data,
          "image_hw": hw,
          "joints": joints,
          "joints_valid": valid,
          "joints_visible": visible,
          "center": p["center"],
          "scale": p["scale"],
          "head_box": head_box,
          "torso_box": torso_box(p["center"], p["scale"]),
          "head_size": common.head_size(head_box),
          "torso_size": common.torso_size(SKELETON, joints, valid),
          "image_name": p["image_name"].encode(),
          "image_index": p["image_index"],
          "person_index": p["person_index"],
          "activity": p["activity"].encode(),
        }
        yield where, ex, "joints" in p

    return common.numbered(skips, candidates())
