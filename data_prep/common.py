"""Pieces every builder shares: the common features and bad-row bookkeeping.

The feature set is the contract of `docs/design.md` ("Dataset features"), defined
once in `heatpose_jax.datasets` (`common_features`, `dataset_info`,
`extent_center_scale`) and re-exported here; the PCK normalizers come from
`heatpose_jax.metrics`, the module that scores with them.
"""

from __future__ import annotations

import collections
import errno
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from heatpose_jax import joints as joints_lib
from heatpose_jax import metrics
from heatpose_jax.datasets import common_features, dataset_info, extent_center_scale  # noqa: F401

# The images folder inside every manual dir.
IMAGES = "images"


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


def head_size(head_box) -> np.float32:
  """MPII's PCKh normalizer of one head box (`metrics.head_size_from_boxes`)."""
  return np.float32(metrics.head_size_from_boxes(np.asarray(head_box)[None])[0])


def torso_size(skeleton: joints_lib.Skeleton, joints, valid) -> np.float32:
  """One example's PCK torso size (`metrics.torso_normalizer`); 0 when undefined."""
  return np.float32(
    metrics.torso_normalizer(np.asarray(joints)[None], np.asarray(valid)[None], skeleton)[0]
  )
