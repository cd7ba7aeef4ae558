"""Pieces every builder shares: the common features and bad-row bookkeeping.

The feature set is the contract of `docs/design.md` ("Dataset features"). No
TensorFlow: images are stored as their encoded bytes (`tfds.features.Image` needs
TensorFlow to encode) and decoded with PIL by the input pipeline.
"""

from __future__ import annotations

import collections
import errno
import io
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from heatpose_jax import joints as joints_lib

# The images folder inside every manual dir.
IMAGES = "images"


def common_features(num_joints: int, **extra) -> tfds.features.FeaturesDict:
  """The features every builder writes, plus dataset-specific `extra` ones."""
  t = tfds.features.Tensor
  return tfds.features.FeaturesDict(
    {
      "image": t(shape=(), dtype=np.object_),
      "image_hw": t(shape=(2,), dtype=np.int32),
      "index": t(shape=(), dtype=np.int64),
      "joints": t(shape=(num_joints, 2), dtype=np.float32),
      "joints_valid": t(shape=(num_joints,), dtype=np.bool_),
      "joints_visible": t(shape=(num_joints,), dtype=np.bool_),
      "center": t(shape=(2,), dtype=np.float32),
      "scale": t(shape=(), dtype=np.float32),
      "head_box": t(shape=(4,), dtype=np.float32),
      "torso_box": t(shape=(4,), dtype=np.float32),
      "head_size": t(shape=(), dtype=np.float32),
      "torso_size": t(shape=(), dtype=np.float32),
      **extra,
    }
  )


def dataset_info(builder: tfds.core.DatasetBuilder, **kwargs) -> tfds.core.DatasetInfo:
  """`tfds.core.DatasetInfo` that keeps every split in file order.

  TFDS 4.9.10 reads `disable_shuffling` from the DatasetInfo only: a builder's
  class attribute alone leaves the splits shuffled by key hash, and the `index`
  feature and the predictions files rely on file order.
  """
  return tfds.core.DatasetInfo(builder=builder, disable_shuffling=True, **kwargs)


def head_size(head_box: np.ndarray) -> np.float32:
  """MPII's PCKh normalizer: 0.6 x the head box's diagonal (0 for an empty box)."""
  x1, y1, x2, y2 = np.asarray(head_box, np.float64)
  return np.float32(0.6 * np.hypot(x2 - x1, y2 - y1))


def torso_size(skeleton: joints_lib.Skeleton, joints, valid) -> np.float32:
  """‖r_shoulder − l_hip‖ in annotated order; 0 when either joint is missing."""
  a, b = skeleton.torso_annotated_indices
  if not (valid[a] and valid[b]):
    return np.float32(0.0)
  return np.float32(np.hypot(*(np.asarray(joints[a]) - np.asarray(joints[b]))))


def extent_center_scale(joints, valid) -> tuple[np.ndarray, np.float32]:
  """Centre of the annotated joints' bounding box and its height / 200 px."""
  pts = np.asarray(joints, np.float32)[np.asarray(valid, bool)]
  lo, hi = pts.min(0), pts.max(0)
  center = ((lo + hi) / 2).astype(np.float32)
  # A person is about 1.25x taller than the span of their joints.
  scale = np.float32(max(hi[1] - lo[1], hi[0] - lo[0], 1.0) * 1.25 / 200.0)
  return center, scale


def image_hw(data: bytes, path) -> np.ndarray:
  """(height, width) of an encoded image; raises ValueError naming `path`."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.verify()
    with Image.open(io.BytesIO(data)) as im:
      w, h = im.size
  except Exception as e:  # PIL raises many types for corrupt files.
    raise ValueError(f"{path}: unreadable image ({e})") from e
  return np.array([h, w], np.int32)


class SkipCounter:
  """Counts skipped rows by reason and logs each with what identifies it."""

  def __init__(self, dataset: str):
    self.dataset = dataset
    self.counts: collections.Counter[str] = collections.Counter()

  def skip(self, reason: str, where: str) -> None:
    self.counts[reason] += 1
    logging.warning("%s: skipping %s: %s", self.dataset, where, reason)

  def summary(self) -> None:
    if self.counts:
      total = sum(self.counts.values())
      logging.warning(
        "%s: skipped %d rows (%s)",
        self.dataset,
        total,
        ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())),
      )


def check_joints(joints: np.ndarray, valid: np.ndarray) -> str | None:
  """The reason a row's joints are unusable, or None if they are fine."""
  if not np.any(valid):
    return "all joints missing"
  if not np.all(np.isfinite(joints[valid])):
    return "NaN or infinite joint coordinates"
  return None


def mat_text(value) -> str:
  """A MATLAB char field as str ('' for an empty array)."""
  if isinstance(value, str):
    return value
  arr = np.asarray(value)
  return "" if arr.size == 0 else str(arr.ravel()[0])


def manual_paths(dl_manager, name: str, annotations: str, instructions: str) -> Path:
  """The manual dir, checked to hold `annotations` and `images/`; clear errors if not."""
  try:
    root = Path(dl_manager.manual_dir)
  except AssertionError as e:  # TFDS raises AssertionError for a missing/empty dir.
    raise FileNotFoundError(f"{name}: {e}") from e
  for want in (annotations, IMAGES):
    if not (root / want).exists():
      raise FileNotFoundError(
        f"{name}: {root / want} not found in the manual dir {root}.\n{instructions}"
      )
  return root


def read_image(path: Path) -> tuple[bytes, np.ndarray]:
  """(the file's bytes, (h, w) int32) of an image.

  Raises:
    FileNotFoundError: the file is absent (`.filename` is the path).
    ValueError: PIL cannot read it; the message names the file.
  """
  if not path.is_file():
    raise FileNotFoundError(errno.ENOENT, "image file absent", str(path))
  data = path.read_bytes()
  return data, image_hw(data, path)


def skip_image(skips: SkipCounter, error: Exception, where: str) -> None:
  """Counts a `read_image` failure of the row `where`."""
  if isinstance(error, FileNotFoundError):
    skips.skip("image file absent", f"{where} at {error.filename}")
  else:  # common.image_hw's message names the file and PIL's reason.
    skips.skip("unreadable image", f"{where}: {error}")
