"""The dataset contract: the common TFDS features every builder writes
(docs/design.md, "Dataset features") and the helpers builders share.

Imports run one way: the builders (`data_prep` for FLIC, MPII, LSP;
`synthetic_dataset`) import this module; it imports no builder.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from heatpose_jax.data import dataset_specs


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What every builder of the project shares: `array_record` files (readable
  with `as_data_source`, no TensorFlow) and its own source file as `code_path`."""

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    # TFDS's own lookup of a builder's file imports `importlib_resources`, absent on 3.11.
    cls.code_path = epath.Path(inspect.getfile(cls))

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  # TFDS prints two bold lines to stdout around every build ("Downloading and
  # preparing dataset Unknown size ...", "... Subsequent calls will reuse this
  # data."): logged at INFO instead, so builds are as quiet as training (warnings
  # and the progress bar; `--verbosity=0` shows them).
  def _log_download_bytes(self) -> None:
    logging.info("preparing dataset %s in %s", self.info.full_name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("dataset %s prepared in %s", self.info.full_name, self.data_dir)


def common_features(num_joints: int, **extra):
  """The `tfds.features.FeaturesDict` every builder writes, plus dataset-specific `extra`.

  No TensorFlow: images are their encoded bytes (`tfds.features.Image` needs
  TensorFlow to encode) and the input pipeline decodes them with PIL.
  """
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


def dataset_info(builder, **kwargs):
  """`tfds.core.DatasetInfo` that keeps every split in file order.

  TFDS 4.9.10 reads `disable_shuffling` from the DatasetInfo only: a builder's
  class attribute alone leaves the splits shuffled by key hash, and the `index`
  feature and the predictions files rely on file order.
  """
  return tfds.core.DatasetInfo(builder=builder, disable_shuffling=True, **kwargs)


def spec_metadata(spec: dataset_specs.DatasetSpec) -> tfds.core.MetadataDict:
  """The metadata that makes a built dataset describe itself: its
  `dataset_specs.DatasetSpec` (`to_json`) in `metadata.json`, which
  `datasets.find_spec` registers where no module does (`dataset_info(...,
  metadata=spec_metadata(SPEC))`; for datasets whose joints are read at build time).
  """
  return tfds.core.MetadataDict({dataset_specs.METADATA_KEY: spec.to_json()})


def extent_center_scale(joints, valid) -> tuple[np.ndarray, np.float32]:
  """Centre of the annotated joints' bounding box and its size / 200 px.

  `scale` follows MPII's person-height / 200 convention: a person is about
  1.25× taller than the span of their joints (the larger side of the box).
  """
  pts = np.asarray(joints, np.float32)[np.asarray(valid, bool)]
  lo, hi = pts.min(0), pts.max(0)
  center = ((lo + hi) / 2).astype(np.float32)
  scale = np.float32(max(hi[1] - lo[1], hi[0] - lo[0], 1.0) * 1.25 / 200.0)
  return center, scale


def overridable_fields(cfg) -> tuple[str, ...]:
  """The fields a dataclass BuilderConfig adds to `tfds.core.BuilderConfig`."""
  base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  return tuple(f.name for f in dataclasses.fields(cfg) if f.name not in base)


def derive_config(cfg, **overrides):
  """A copy of a dataclass BuilderConfig with some fields changed, named after them.

  Args:
    cfg: the base config (e.g. `synthetic_dataset.CONFIGS["tiny"]`).
    **overrides: new values of `overridable_fields(cfg)`; None values are ignored.

  Returns:
    `cfg` itself when nothing changes, else a copy named e.g.
    `tiny-num_train1000-seed3` (TFDS stores it under that directory, and
    `data_source("synthetic", ..., config_name="tiny-num_train1000-seed3")`
    reads it back from the files).

  Raises:
    ValueError: a field the config does not have.
  """
  fields = overridable_fields(cfg)
  changes = {}
  for key, value in overrides.items():
    if key not in fields:
      raise ValueError(f"config {cfg.name!r} has no field {key!r}; fields: {fields}")
    if value is not None and value != getattr(cfg, key):
      changes[key] = value
  if not changes:
    return cfg
  suffix = "-".join(f"{k}{_name_part(v)}" for k, v in sorted(changes.items()))
  return dataclasses.replace(cfg, name=f"{cfg.name}-{suffix}", description=None, **changes)


def _name_part(value) -> str:
  """A config value as config-name characters ([A-Za-z0-9_.+-])."""
  if isinstance(value, tuple | list):
    return "_".join(_name_part(v) for v in value)
  return str(value)
