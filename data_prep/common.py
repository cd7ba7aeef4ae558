"""Pieces every builder shares: the common features, image and annotation checks, and
the bookkeeping of what a build skipped.

The feature set is the contract of `docs/design.md` ("Dataset features"), defined
once in `heatpose_jax.data.features` (`common_features`, `dataset_info`,
`extent_center_scale`) and re-exported here; the PCK normalizers come from
`heatpose_jax.data.joints` (`torso_size`, `head_size_from_boxes`), beside the joints
they measure.

The validation rules (what is skipped, what is marked invalid, and why) are listed in
`docs/data.md`. In short: a row whose image or annotation cannot be trusted is
skipped, a single joint far outside its image is marked invalid, and every case is
counted by reason in the build's `SkipCounter`s.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image, ImageFile, UnidentifiedImageError

from heatpose_jax.data import joints as joints_lib
from heatpose_jax.data import orientation
from heatpose_jax.data.features import (  # noqa: F401
  ArrayRecordBuilder,
  common_features,
  dataset_info,
  extent_center_scale,
)

# The images folder inside every manual dir.
IMAGES = "images"
# Pixel modes that the input pipeline's `.convert("RGB")` maps faithfully (8 bits
# per channel). Others (I;16, I, F, ...) would be clipped to white or black.
RGB_CONVERTIBLE_MODES = frozenset(
  {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)
# A point (joint, centre) more than this many image sides beyond the image is no
# location but a placeholder or a typo (-1000, 1e9, ...).
FAR_SIDES = 1.0
# A person taller than this many times the image's longer side is implausible.
MAX_PERSON_TO_IMAGE = 10.0

# Reasons, as counted and logged (one per check; details go to the log).
ABSENT = "image file absent"
UNREADABLE = "unreadable image"
BOMB = "decompression bomb"
NON_FINITE_JOINTS = "NaN or infinite joint coordinates"
FAR_JOINT = "joint far outside the image"
ALL_FAR = "every annotated joint far outside the image"
NO_JOINTS = "all joints missing"
FAR_CENTER = "centre not finite or far outside the image"
BAD_SCALE = "scale not positive and finite"
HUGE_SCALE = "scale implausibly large"


class DataError(ValueError):
  """Source data that cannot make a dataset: malformed annotations, an empty split."""


class EmptySplitError(DataError):
  """Every row of a split was skipped (or it had none)."""


class BadImageError(ValueError):
  """An image file that cannot be used; `reason` is its counted category."""

  def __init__(self, path, reason: str, detail: str):
    super().__init__(f"{path}: {reason} ({detail})")
    self.filename = str(path)
    self.reason = reason
    self.detail = detail


@contextlib.contextmanager
def _strict_pil():
  """PIL raising on truncated files and on decompression-bomb warnings.

  `LOAD_TRUNCATED_IMAGES` is a global another import may have set; PIL only warns
  between `MAX_IMAGE_PIXELS` and twice that, and a build must not store either.
  """
  saved = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = saved


def image_hw(data: bytes, path) -> np.ndarray:
  """(height, width) int32 of an encoded image as it is shown, after decoding every pixel.

  The frame is the upright one (`heatpose_jax.data.orientation`): a photo with an EXIF
  Orientation of 5-8 (a phone's portrait stored as landscape pixels) has its
  width and height swapped, as the input pipeline and `Predictor` read it, and
  its joints are checked against that frame. `Image.verify()` does not decode,
  so a JPEG cut short would pass it and fail only in training; `load()` costs
  about 4 ms for a 1280×720 JPEG.

  Raises:
    BadImageError: naming `path`, with `reason` `UNREADABLE` (not an image,
      truncated, corrupt), `BOMB` (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`)
      or `unsupported pixel format (mode M)` (not 8 bits per channel).
  """
  try:
    with _strict_pil(), Image.open(io.BytesIO(data)) as im:
      im.load()
      mode, (w, h) = im.mode, orientation.upright_size(im)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise BadImageError(path, BOMB, str(e)) from e
  except UnidentifiedImageError as e:  # its message names a BytesIO object
    raise BadImageError(path, UNREADABLE, "cannot identify image file: not an image") from e
  except Exception as e:  # PIL raises many types for corrupt files.
    raise BadImageError(path, UNREADABLE, str(e) or type(e).__name__) from e
  if mode not in RGB_CONVERTIBLE_MODES:
    # Stored as is, `.convert("RGB")` in the input pipeline would clip it.
    raise BadImageError(path, f"unsupported pixel format (mode {mode})", "not 8-bit")
  return np.array([h, w], np.int32)


def read_image(path: Path) -> tuple[bytes, np.ndarray]:
  """(the file's bytes, (h, w) int32) of an image, fully decoded once (`image_hw`).

  Raises:
    FileNotFoundError: the file is absent (`.filename` is the path).
    BadImageError: it cannot be used; the message names the file and the reason.
  """
  if not path.is_file():
    raise FileNotFoundError(errno.ENOENT, "image file absent", str(path))
  data = path.read_bytes()
  return data, image_hw(data, path)


class SkipCounter:
  """Counts one split's skipped rows and invalidated joints by reason; logs each."""

  def __init__(self, dataset: str):
    """`dataset`: what the log lines start with, e.g. `flic/train`."""
    self.dataset = dataset
    self.counts: collections.Counter[str] = collections.Counter()  # rows skipped
    self.joints: collections.Counter[str] = collections.Counter()  # joints marked invalid

  def skip(self, reason: str, where: str, detail: str = "") -> None:
    """Counts a skipped row; `where` names it (row and file), `detail` the values."""
    self.counts[reason] += 1
    more = f" ({detail})" if detail else ""
    logging.warning("%s: skipping %s: %s%s", self.dataset, where, reason, more)

  def invalidate(self, reason: str, where: str, joints: list[str]) -> None:
    """Counts joints of a kept row marked invalid (stored as missing)."""
    self.joints[reason] += len(joints)
    logging.warning(
      "%s: %s: marking %s invalid: %s", self.dataset, where, ", ".join(joints), reason
    )

  @property
  def total(self) -> int:
    """Skipped rows plus invalidated joints."""
    return sum(self.counts.values()) + sum(self.joints.values())

  def reasons(self) -> str:
    """`skipped 2 rows (reason: n, ...); marked 1 joints invalid (...)`, or ''."""
    parts = []
    for verb, counts in (
      ("skipped {} rows", self.counts),
      ("marked {} joints invalid", self.joints),
    ):
      if counts:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        parts.append(f"{verb.format(sum(counts.values()))} ({why})")
    return "; ".join(parts)

  def describe(self) -> str:
    """One line: the split, then `reasons()` (or `nothing skipped`)."""
    return f"{self.dataset}: {self.reasons() or 'nothing skipped'}"

  def summary(self) -> None:
    """Logs `describe()` when anything was skipped."""
    if self.total:
      logging.warning("%s", self.describe())


def new_skip_counter(builder, split: str) -> SkipCounter:
  """A `SkipCounter` for `split`, kept on `builder.skip_counters` for the build's report."""
  skips = SkipCounter(f"{builder.name}/{split}")
  if not hasattr(builder, "skip_counters"):
    builder.skip_counters = []
  builder.skip_counters.append(skips)
  return skips


def numbered(skips: SkipCounter, candidates):
  """The examples of a split, numbered in file order: `(index, example)` pairs.

  Args:
    skips: the split's counter.
    candidates: yields `(where, example, needs_joints)`; each example gets the
      last check (`check_example`) and, when it passes, its `index`; a failing
      one is skipped and counted with `where`.

  Raises:
    EmptySplitError: nothing passed (`finish_split`).
  """
  index = 0
  for where, ex, needs_joints in candidates:
    bad = check_example(ex, ex["image_hw"], needs_joints=needs_joints)
    if bad:
      skips.skip(bad[0], where, bad[1])
      continue
    yield index, {**ex, "index": index}
    index += 1
  finish_split(skips, index)


def finish_split(skips: SkipCounter, count: int) -> None:
  """Logs the split's summary; raises `EmptySplitError` when it has no example."""
  skips.summary()
  logging.info("%s: %d examples", skips.dataset, count)
  if count == 0:
    why = skips.reasons() if skips.counts else "no source rows"
    raise EmptySplitError(f"{skips.dataset}: split is empty, no usable example ({why})")


def fmt(values) -> str:
  """Numbers for a log line: `[6.98575, 26.0085, 1e+09]`."""
  return "[" + ", ".join(f"{v:.6g}" for v in np.asarray(values, np.float64).ravel()) + "]"


def far_outside(points, hw) -> np.ndarray:
  """(N,) bool: finite points (x, y) more than `FAR_SIDES` image sides beyond the image.

  Args:
    points: (N, 2) (x, y) 0-based pixels.
    hw: the image's (height, width); it covers [-0.5, w - 0.5] × [-0.5, h - 0.5].
  """
  p = np.asarray(points, np.float64).reshape(-1, 2)
  h, w = float(hw[0]), float(hw[1])
  lo = -0.5 - FAR_SIDES * np.array([w, h])
  hi = np.array([w, h]) - 0.5 + FAR_SIDES * np.array([w, h])
  with np.errstate(invalid="ignore"):
    return np.any((p < lo) | (p > hi), axis=1)


def check_joints(joints: np.ndarray, valid: np.ndarray) -> str | None:
  """The reason a row's joints are unusable, or None if they are fine.

  Args:
    joints: (A, 2) (x, y); only the `valid` ones are looked at.
    valid: (A,) bool, annotated.
  """
  if not np.all(np.isfinite(np.asarray(joints)[valid])):
    return NON_FINITE_JOINTS
  if not np.any(valid):
    return NO_JOINTS
  return None


def clean_joints(
  skeleton: joints_lib.Skeleton, joints, valid, hw, skips: SkipCounter, where: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
  """Marks annotated joints far outside the image invalid and checks the rest.

  Args:
    skeleton: the dataset's skeleton (names the joints in the log).
    joints: (A, 2) (x, y) 0-based original-image pixels (NaN allowed where not valid).
    valid: (A,) bool, annotated.
    hw: the image's (height, width).
    skips: counts the invalidated joints.
    where: names the row in the log.

  Returns:
    `(joints, valid, problem)`: float32 (A, 2) with 0 where not valid, the new
    (A,) valid mask, and None or the reason to skip the row (`NON_FINITE_JOINTS`,
    `NO_JOINTS`, `ALL_FAR`).
  """
  joints = np.asarray(joints, np.float64)
  valid = np.asarray(valid, bool).copy()
  problem = check_joints(joints, valid)
  far = valid & far_outside(joints, hw)
  if problem is None and far.any():
    if far.sum() == valid.sum():  # the row is skipped: count it once, as a row
      problem = ALL_FAR
    else:
      names = [
        f"{skeleton.annotated[j]} at ({joints[j, 0]:g}, {joints[j, 1]:g})"
        for j in np.flatnonzero(far)
      ]
      skips.invalidate(FAR_JOINT, f"{where} (image {hw[1]}×{hw[0]})", names)
      valid &= ~far
  out = np.where(valid[:, None] & np.isfinite(joints), joints, 0.0).astype(np.float32)
  return out, valid, problem


def box_problem(box, name: str) -> str | None:
  """Why a box (x1, y1, x2, y2) is unusable, or None (all zeros = no box, fine).

  Args:
    box: (4,) x1, y1, x2, y2.
    name: `head box` or `torso box`, for the reason.
  """
  b = np.asarray(box, np.float64).ravel()
  if b.shape != (4,) or not np.all(np.isfinite(b)):
    return f"{name} not 4 finite numbers"
  if np.any(b != 0) and not (b[2] > b[0] and b[3] > b[1]):
    return f"degenerate {name} (x2 <= x1 or y2 <= y1)"
  return None


def scale_problem(scale) -> str | None:
  """`BAD_SCALE` unless `scale` (person height / 200 px) is finite and positive."""
  return None if np.isfinite(scale) and scale > 0 else BAD_SCALE


def check_example(ex: dict, hw, *, needs_joints: bool = True) -> tuple[str, str] | None:
  """The last check of every example before it is written: `(reason, detail)` or None.

  Args:
    ex: the example's features (`center`, `scale`, `head_box`, `torso_box`,
      `head_size`, `torso_size`, `joints`, `joints_valid`), joints already cleaned.
    hw: the image's (height, width).
    needs_joints: False for rows that carry no joints (MPII test rectangles).
  """
  for key in ("head_box", "torso_box"):
    problem = box_problem(ex[key], key.replace("_", " "))
    if problem:
      return problem, f"{key} {fmt(ex[key])}"
  center = np.asarray(ex["center"], np.float64)
  if not np.all(np.isfinite(center)) or far_outside(center, hw)[0]:
    return FAR_CENTER, f"center {fmt(center)}, image {hw[1]}×{hw[0]}"
  scale = float(ex["scale"])
  if scale_problem(scale):
    return BAD_SCALE, f"scale {scale:g}"
  if 200.0 * scale > MAX_PERSON_TO_IMAGE * max(hw):
    return HUGE_SCALE, f"scale {scale:g}: person {200 * scale:g} px, image {hw[1]}×{hw[0]}"
  for key in ("head_size", "torso_size"):
    if not (np.isfinite(ex[key]) and ex[key] >= 0):
      return f"bad {key.replace('_', ' ')}", f"{key} {float(ex[key]):g}"
  if needs_joints:
    problem = check_joints(ex["joints"], ex["joints_valid"])
    if problem:
      return problem, ""
  return None


def load_mat(mat_path: Path, dataset: str, variable: str | None = None, **kwargs) -> dict:
  """A dataset's MATLAB annotation file: `scipy.io.loadmat(mat_path, **kwargs)`.

  Raises:
    FileNotFoundError: no such file (the message names `dataset`).
    DataError: not a MATLAB file, or one without `variable` (when given).
  """
  if not mat_path.is_file():
    raise FileNotFoundError(f"{dataset} annotation file {mat_path} not found")
  try:
    mat = sio.loadmat(mat_path, **kwargs)
  except Exception as e:  # scipy raises several types for non-MATLAB files.
    raise DataError(f"{mat_path}: not a readable MATLAB file ({e})") from e
  if variable is not None and variable not in mat:
    found = sorted(k for k in mat if not k.startswith("__"))
    raise DataError(f"{mat_path}: no variable {variable!r} (found {found})")
  return mat


def mat_text(value) -> str:
  """A MATLAB char field as str ('' for an empty array)."""
  if isinstance(value, str):
    return value
  arr = np.asarray(value)
  return "" if arr.size == 0 else str(arr.ravel()[0])


def manual_paths(dl_manager, name: str, annotations: str, instructions: str) -> Path:
  """The manual dir, checked to hold `annotations` and `images/`; clear errors if not.

  The first line of each error is complete on its own (the CLI prints only it).
  """
  try:
    root = Path(dl_manager.manual_dir)
  except AssertionError as e:  # TFDS raises AssertionError for a missing/empty dir.
    raise FileNotFoundError(f"{name}: {e}") from e
  for want in (annotations, IMAGES):
    if not (root / want).exists():
      raise FileNotFoundError(
        f"{name}: {root / want} not found in the manual dir {root}"
        f" (see data_prep/manual_dirs.md).\n{instructions}"
      )
  return root


def skip_image(skips: SkipCounter, error: Exception, where: str) -> None:
  """Counts a `read_image` failure of the row `where`, naming the file and the reason."""
  if isinstance(error, FileNotFoundError):
    skips.skip(ABSENT, f"{where} at {error.filename}")
  elif isinstance(error, BadImageError):
    skips.skip(error.reason, f"{where} at {error.filename}", error.detail)
  else:
    skips.skip(UNREADABLE, where, str(error))


def head_size(head_box) -> np.float32:
  """MPII's PCKh normalizer of one head box (`joints_lib.head_size_from_boxes`)."""
  return np.float32(joints_lib.head_size_from_boxes(np.asarray(head_box)[None])[0])


def torso_size(skeleton: joints_lib.Skeleton, joints, valid) -> np.float32:
  """One example's PCK torso size (`joints.torso_size`); 0 when undefined."""
  return np.float32(
    joints_lib.torso_size(np.asarray(joints)[None], np.asarray(valid)[None], skeleton)[0]
  )
