r"""COCO-format person keypoints as a TFDS builder: `coco_keypoints`, one example per
annotated person, cropped top-down from its box (COCO 2017, CrowdPose, OCHuman, AI
Challenger, ... any file in COCO's layout).

  python -m data_prep.build --dataset=coco_keypoints --config=coco \
    --annotations=train=person_keypoints_train2017.json \
    --annotations=validation=person_keypoints_val2017.json --images=DIR --data_dir=D

Each `--annotations=SPLIT=FILE.json` makes one split; `--images` is the folder that
`images[*].file_name` is relative to (like FLIC's and MPII's manual dirs; a name
not found there is also tried as its base name). Configs:

| config | joints | limbs | checked |
|---|---|---|---|
| `coco` | COCO 2017's 17 | COCO's | the file's names are COCO's, in order |
| `crowdpose` | CrowdPose's 14 | mmpose's CrowdPose links (its files carry COCO's skeleton) | CrowdPose's names, in order |
| `generic` | the file's | the file's `skeleton` | nothing |

Names are compared by side and part (`coco_format.joint_parts`: `Left Shoulder` is
`left_shoulder`); the stored names are the file's. Flip pairs come from the names
(`coco_format.derive_flip_pairs`), or `--flip_pairs=LEFT:RIGHT,...` (or `none`).
Every COCO-format build is the dataset `coco` (`dataset_specs.coco_spec`), and stores
its spec (the file's joints, limbs, flip pairs, box aspect) in its metadata, so
training, evaluation, prediction and browsing need no code for it.

Examples, in the order of `images`, then of `annotations`: every annotation of the
keypoint category with `iscrowd` 0 and at least `min_keypoints` (1) labelled
keypoints (v > 0; crowd regions, people with fewer labels and other categories are
counted, one line per split, by design). Features: the common ones (docs/design.md)
and `image_id`, `annotation_id` (int64, to write results back), `keypoint_visibility`
(K,) int32 = the file's v ∈ {0, 1, 2} as it is, `bbox` (4,) float32 x1, y1, x2, y2,
`area` (the file's, 0 where absent), `image_name` (the file_name). `joints` are the
file's x, y (pixel indices: the design frame, no shift), `joints_valid` = v > 0,
`joints_visible` = v == 2; `bbox` is the file's [x, y, w, h] moved to the design
frame by −0.5 (`coco_format.bbox_to_box`); `center` / `scale` its fixed-aspect box
(`topdown.box_center_scale`, aspect 0.75 = 192 / 256); `torso_box` the bounding
box of the labelled shoulders and hips (zeros where it has no area); no head box.

Checks: a file that is not COCO's layout, has no keypoint category, or other joints
than the config's (or than the first file's) stops the build with one line naming
the file and field. An item that is bad is skipped, counted and named (exit status
3): an annotation with an unknown `category_id`, a `keypoints` array whose length is
not 3·K, visibilities other than 0/1/2, a bad `bbox`, an `image_id` not among the
images; an image entry without `file_name`, an absent or unreadable image, or one
whose size is not the entry's width × height (its annotations are skipped).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import common
from heatpose_jax.data import coco_format, dataset_specs, features, topdown

# Skipped items (counted, logged, exit status 3).
NOT_AN_OBJECT = "annotation is not an object"
NO_ID = "annotation without an integer id"
UNKNOWN_CATEGORY = "unknown category_id"
BAD_KEYPOINTS = "keypoints not 3·K numbers"
BAD_VISIBILITY = "keypoint visibility not 0, 1 or 2"
BAD_BBOX = "bad bbox"
UNKNOWN_IMAGE = "image_id not among the images"
NO_FILE_NAME = "image entry without file_name"
BAD_IMAGE_ENTRY = "image entry without an integer id"
SIZE_MISMATCH = "image size differs from its entry's width × height"
# Annotations left out by design (counted per split, one line).
CROWD = "crowd regions (iscrowd)"
FEW_KEYPOINTS = "people with fewer labelled keypoints than min_keypoints"
OTHER_CATEGORY = "annotations of other categories"
_TORSO_PARTS = ("shoulder", "hip")


@dataclasses.dataclass
class CocoKeypointsConfig(tfds.core.BuilderConfig):
  """A COCO-format build.

  Attributes:
    keypoints: the joints a named config expects (compared by side and part); ()
      any (generic).
    limbs: 1-based joint pairs drawn and used by the MRF instead of the file's
      `skeleton`; (): the file's.
    aspect: width / height of the fixed-aspect person box.
    min_keypoints: fewer labelled keypoints leave a person out.
  """

  keypoints: tuple[str, ...] = ()
  limbs: tuple[tuple[int, int], ...] = ()
  aspect: float = 0.75
  min_keypoints: int = 1


@dataclasses.dataclass(frozen=True)
class Sources:
  """Where a build's files are (the builder's arguments, not its config: they do not
  change the config's name or directory).

  Attributes:
    annotations: ((split, file), ...) from `--annotations=SPLIT=FILE.json`.
    images: the images folder (`--images`).
    flip_pairs: `--flip_pairs` ('' = from the names).
  """

  annotations: tuple[tuple[str, str], ...] = ()
  images: str = ""
  flip_pairs: str = ""


BUILDER_CONFIGS = [
  CocoKeypointsConfig(
    name="coco",
    description="COCO 2017 person keypoints: 17 joints.",
    keypoints=coco_format.COCO_KEYPOINTS,
    limbs=coco_format.COCO_SKELETON,
  ),
  CocoKeypointsConfig(
    name="crowdpose",
    description="CrowdPose: 14 joints (head top, neck and 12 limb joints).",
    keypoints=coco_format.CROWDPOSE_KEYPOINTS,
    limbs=coco_format.CROWDPOSE_SKELETON,
  ),
  CocoKeypointsConfig(name="generic", description="Any COCO-format keypoint file."),
]


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int):
  del mtime_ns, size  # the cache key: a file changed on disk is read again
  return coco_format.load_json(path, "--annotations")


def load(path: str | Path) -> dict:
  """A COCO annotation file, parsed once per build (`_info` and the splits read it)."""
  p = Path(path).expanduser()
  if not p.is_file():
    raise FileNotFoundError(f"--annotations: {p}: no such file")
  st = p.stat()
  data = _parsed(str(p), st.st_mtime_ns, st.st_size)
  coco_format.check_annotation_file(data, p)
  return data


def category(cfg: CocoKeypointsConfig, path: str | Path) -> dict:
  """The keypoint category of `path`, checked against a named config's joints.

  Raises:
    ValueError: other joints than the config's (one line naming the file).
  """
  cat = coco_format.keypoint_category(load(path), path)
  if cfg.keypoints:
    want = coco_format.joint_parts(cfg.keypoints)
    if coco_format.joint_parts(cat["keypoints"]) != want:
      raise ValueError(
        f"{path}: categories keypoints {list(cat['keypoints'])} are not --config={cfg.name}'s "
        f"{len(cfg.keypoints)} joints {list(cfg.keypoints)} (in order); use --config=generic"
      )
  return cat


def make_spec(cfg: CocoKeypointsConfig, src: Sources) -> dataset_specs.DatasetSpec:
  """The build's spec: the first annotation file's joints (a named config's own
  without files: reading a prepared dataset), limbs, flip pairs, the box aspect."""
  if src.annotations:
    where = src.annotations[0][1]
    cat = category(cfg, where)
    names, limbs = cat["keypoints"], cfg.limbs or cat["skeleton"]
  elif cfg.keypoints:
    where, names, limbs = f"--config={cfg.name}", cfg.keypoints, cfg.limbs
  else:
    raise ValueError(
      f"--config={cfg.name} needs --annotations=SPLIT=FILE.json (its joints are the file's)"
    )
  if src.flip_pairs:
    pairs = coco_format.parse_flip_pairs(src.flip_pairs, names, f"--flip_pairs={src.flip_pairs}")
  else:
    pairs = coco_format.derive_flip_pairs(names, f"{where}: categories keypoints")
  try:
    skeleton = coco_format.make_skeleton(names, limbs, pairs)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  return dataset_specs.coco_spec(skeleton, cfg.aspect)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def index_images(data: dict, path, skips: common.SkipCounter) -> dict:
  """image id → {file_name, width, height, where}, or {problem, where} for an entry
  without file_name (its annotations are skipped); entries without an id are skipped."""
  out = {}
  for i, im in enumerate(data["images"]):
    where = f"{path}: images[{i}]"
    if not isinstance(im, dict) or not _is_int(im.get("id")):
      skips.skip(BAD_IMAGE_ENTRY, where)
      continue
    name = im.get("file_name")
    if not isinstance(name, str) or not name:
      out[im["id"]] = {"problem": NO_FILE_NAME, "where": f"{where}.file_name"}
      continue
    out[im["id"]] = {"file_name": name, "where": where, "w": im.get("width"), "h": im.get("height")}
  return out


def check_annotation(ann, cat: dict, category_ids: set, images: dict, min_keypoints: int):
  """`(kind, reason, detail)` of an annotation that makes no example, or None.

  kind: 'bad' (skipped and counted as an item) or 'left out' (by design).
  """
  if not isinstance(ann, dict):
    return "bad", NOT_AN_OBJECT, ""
  if not _is_int(ann.get("id")):
    return "bad", NO_ID, f"id {ann.get('id')!r}"
  if ann.get("category_id") not in category_ids:
    return "bad", UNKNOWN_CATEGORY, f"category_id {ann.get('category_id')!r}"
  if ann["category_id"] != cat["id"]:
    return "left out", OTHER_CATEGORY, ""
  if ann.get("iscrowd"):
    return "left out", CROWD, ""
  kp, k = ann.get("keypoints"), len(cat["keypoints"])
  if not isinstance(kp, list) or len(kp) != 3 * k or not all(_finite(v) for v in kp):
    n = len(kp) if isinstance(kp, list) else type(kp).__name__
    return "bad", BAD_KEYPOINTS, f"keypoints: {n} values, expected 3 × {k} = {3 * k}"
  if any(v not in (0, 1, 2) for v in kp[2::3]):
    return "bad", BAD_VISIBILITY, f"v {sorted({v for v in kp[2::3] if v not in (0, 1, 2)})}"
  if sum(v > 0 for v in kp[2::3]) < min_keypoints:
    return "left out", FEW_KEYPOINTS, ""
  problem = coco_format.bbox_problem(ann.get("bbox"))
  if problem:
    return "bad", BAD_BBOX, f"bbox {ann.get('bbox')!r}: {problem}"
  if ann.get("image_id") not in images:
    return "bad", UNKNOWN_IMAGE, f"image_id {ann.get('image_id')!r}"
  return None


def _finite(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def torso_box(skeleton, joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """(4,) box of the labelled shoulders and hips; zeros where it has no area (fewer
  than two, or all on a line)."""
  parts = coco_format.joint_parts(skeleton.annotated)
  sel = np.array([p in _TORSO_PARTS for _, p in parts]) & valid
  box = np.concatenate([joints[sel].min(0), joints[sel].max(0)]) if sel.any() else np.zeros(4)
  return (box if box[2] > box[0] and box[3] > box[1] else np.zeros(4)).astype(np.float32)


def person(ann: dict, hw, cfg, skeleton, skips, where) -> dict | None:
  """The features of one annotated person (None: skipped, counted in `skips`)."""
  kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
  v = kp[:, 2].astype(np.int32)
  joints, valid, problem = common.clean_joints(skeleton, kp[:, :2], v > 0, hw, skips, where)
  if problem:
    skips.skip(problem, where)
    return None
  box = coco_format.bbox_to_box(ann["bbox"])
  center, scale = topdown.box_center_scale(box, cfg.aspect)
  area = ann.get("area")
  return {
    "joints": joints,
    "joints_valid": valid,
    "joints_visible": valid & (v == 2),
    "center": center,
    "scale": scale,
    "head_box": np.zeros(4, np.float32),
    "torso_box": torso_box(skeleton, joints, valid),
    "head_size": np.float32(0.0),
    "torso_size": common.torso_size(skeleton, joints, valid),
    "annotation_id": np.int64(ann["id"]),
    "keypoint_visibility": v,
    "bbox": box.astype(np.float32),
    "area": np.float32(area if _finite(area) else 0.0),
  }


class CocoKeypoints(common.ArrayRecordBuilder):
  """Any COCO-format person-keypoint file: one example per annotated person."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: top-down persons, v kept, ids kept."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = "coco"
  # The arguments that say where the files are (`data_prep.build`'s source flags).
  SOURCES = tuple(f.name for f in dataclasses.fields(Sources))

  def __init__(self, *, annotations=(), images: str = "", flip_pairs: str = "", **kwargs):
    self.sources = Sources(tuple(tuple(a) for a in annotations), images, flip_pairs)
    super().__init__(**kwargs)

  @functools.cached_property
  def spec(self) -> dataset_specs.DatasetSpec:
    return make_spec(self.builder_config, self.sources)

  def _info(self) -> tfds.core.DatasetInfo:
    t = tfds.features.Tensor
    k = self.spec.skeleton.num_joints
    return common.dataset_info(
      self,
      description="People of a COCO-format keypoint file, one example per annotation.",
      features=common.common_features(
        k,
        image_id=t(shape=(), dtype=np.int64),
        annotation_id=t(shape=(), dtype=np.int64),
        keypoint_visibility=t(shape=(k,), dtype=np.int32),
        bbox=t(shape=(4,), dtype=np.float32),
        area=t(shape=(), dtype=np.float32),
        image_name=t(shape=(), dtype=np.object_),
      ),
      metadata=features.spec_metadata(self.spec),
      homepage="https://cocodataset.org/#keypoints-2020",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg, src = self.builder_config, self.sources
    if not src.annotations:
      raise ValueError(f"--config={cfg.name}: give --annotations=SPLIT=FILE.json (one per split)")
    images = Path(src.images).expanduser()
    if not src.images or not images.is_dir():
      raise FileNotFoundError(f"--images={src.images}: not a directory (the images folder)")
    names = self.spec.skeleton.annotated
    for _, path in src.annotations:
      found = category(cfg, path)["keypoints"]
      if found != names:
        raise ValueError(
          f"{path}: categories keypoints {list(found)} differ from {src.annotations[0][1]}'s "
          f"{list(names)}: one build holds one set of joints"
        )
    return {split: self._generate_examples(split, path, images) for split, path in src.annotations}

  def _generate_examples(self, split: str, path: str, images: Path):
    skips = common.new_skip_counter(self, split)
    return common.numbered(skips, self._candidates(split, path, images, skips))

  def _candidates(self, split, path, images: Path, skips: common.SkipCounter):
    """Yields (where, example, True) per person, image by image (`numbered`)."""
    cfg = self.builder_config
    data = load(path)
    cat = coco_format.keypoint_category(data, path)
    ids = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    table = index_images(data, path, skips)
    by_image, left_out = collections.defaultdict(list), collections.Counter()
    for i, ann in enumerate(data["annotations"]):
      where = f"{path}: annotations[{i}]"
      bad = check_annotation(ann, cat, ids, table, cfg.min_keypoints)
      if bad is None:
        by_image[ann["image_id"]].append((where, ann))
      elif bad[0] == "bad":
        skips.skip(bad[1], where, bad[2])
      else:
        left_out[bad[1]] += 1
    for image_id, entry in table.items():
      people = by_image.get(image_id, [])
      if people:
        yield from self._people(image_id, entry, people, images, skips)
    if left_out:
      logging.warning(
        "%s/%s: left out by design: %s",
        self.name,
        split,
        ", ".join(f"{n} {why}" for why, n in sorted(left_out.items())),
      )

  def _people(self, image_id, entry, people, images: Path, skips):
    """The examples of one image's people (all skipped when the image is unusable)."""
    cfg, skeleton = self.builder_config, self.spec.skeleton
    if "problem" in entry:
      for where, _ in people:
        skips.skip(entry["problem"], where, entry["where"])
      return
    file = images / entry["file_name"]
    if not file.is_file() and (images / Path(entry["file_name"]).name).is_file():
      file = images / Path(entry["file_name"]).name
    try:
      data, hw = common.read_image(file)
    except (FileNotFoundError, ValueError) as e:
      for where, _ in people:
        common.skip_image(skips, e, where)
      return
    if _is_int(entry["w"]) and _is_int(entry["h"]) and (entry["h"], entry["w"]) != tuple(hw):
      detail = f"{entry['where']}: {entry['w']}×{entry['h']}, {file}: {hw[1]}×{hw[0]}"
      for where, _ in people:
        skips.skip(SIZE_MISMATCH, where, detail)
      return
    for where, ann in people:
      ex = person(ann, hw, cfg, skeleton, skips, where)
      if ex is not None:
        extra = {"image_id": np.int64(image_id), "image_name": entry["file_name"].encode()}
        yield where, {"image": data, "image_hw": hw, **ex, **extra}, True
