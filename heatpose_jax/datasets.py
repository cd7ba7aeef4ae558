"""The datasets' contract and where to find them: the common TFDS features every
builder writes (docs/design.md, "Dataset features"), and `data_source`, which
reads a built split without importing `data_prep` and prepares the datasets
that need no files (synthetic people) on demand, as TFDS itself does.

Imports run one way: `data_prep` (the builders of FLIC, MPII, LSP) imports this
module; nothing here imports `data_prep`.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

# Datasets rendered from a seed: `data_source` builds them when they are missing.
GENERATED = ("synthetic",)


def common_features(num_joints: int, **extra):
  """The `tfds.features.FeaturesDict` every builder writes, plus dataset-specific `extra`.

  No TensorFlow: images are their encoded bytes (`tfds.features.Image` needs
  TensorFlow to encode) and the input pipeline decodes them with PIL.
  """
  import tensorflow_datasets as tfds

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
  import tensorflow_datasets as tfds

  return tfds.core.DatasetInfo(builder=builder, disable_shuffling=True, **kwargs)


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
  import tensorflow_datasets as tfds

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


def default_data_dir(data_dir: str = "") -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _prepared_dir(root: str) -> str | None:
  """The newest version directory under `root` that holds a complete dataset."""
  if not os.path.isdir(root):
    return None
  versions = sorted(
    v for v in os.listdir(root) if os.path.exists(os.path.join(root, v, "dataset_info.json"))
  )
  return os.path.join(root, versions[-1]) if versions else None


def find_prepared(name: str, config_name: str, data_dir: str) -> str | None:
  """`DATA_DIR/NAME/[CONFIG/]VERSION` of a complete build, or None.

  Without `config_name`, a dataset built without configs is taken first, then
  the first config (in name order) that has a complete build.
  """
  root = os.path.join(data_dir, name)
  if config_name:
    return _prepared_dir(os.path.join(root, config_name))
  found = _prepared_dir(root)
  if found or not os.path.isdir(root):
    return found
  for c in sorted(os.listdir(root)):
    found = _prepared_dir(os.path.join(root, c))
    if found:
      return found
  return None


def build_command(name: str, config_name: str, data_dir: str) -> str:
  cfg = f" --config={config_name}" if config_name else ""
  return f"python -m data_prep.build --dataset={name}{cfg} --data_dir={data_dir} [--manual_dir=...]"


def data_source(name: str, split: str, *, config_name: str = "", data_dir: str = "", prepare=True):
  """A random-access source of one split's feature dicts (`as_data_source`).

  Args:
    name: the TFDS name (`synthetic`, `flic`, `mpii`, `lsp`).
    split: e.g. 'train', 'test', 'validation'.
    config_name: builder config ("" for the default, or the only one built).
    data_dir: the TFDS data dir ("" → `default_data_dir()`).
    prepare: build a missing dataset of `GENERATED` (named configs only).

  Raises:
    FileNotFoundError: the dataset is not built (the message gives the command).
    ValueError: no such split, or an empty one.
  """
  import tensorflow_datasets as tfds

  data_dir = default_data_dir(data_dir)
  label = name + (f"/{config_name}" if config_name else "")
  path = find_prepared(name, config_name, data_dir)
  if path is None and prepare and name in GENERATED:
    from heatpose_jax import synthetic_dataset

    cfg = config_name or synthetic_dataset.DEFAULT_CONFIG
    if cfg in synthetic_dataset.CONFIGS:
      logging.warning(
        "dataset %s/%s is not built in %s: preparing it now (rendered, no files needed)",
        name,
        cfg,
        data_dir,
      )
      synthetic_dataset.prepare(cfg, data_dir)
      path = find_prepared(name, cfg, data_dir)
  if path is None:
    raise FileNotFoundError(
      f"dataset {label!r} is not built in {data_dir!r} (config.data_dir / $TFDS_DATA_DIR): "
      f"run `{build_command(name, config_name, data_dir)}`"
    )
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(
      f"dataset {label!r} has no split {split!r}; it has {list(builder.info.splits)}"
    )
  if builder.info.splits[split].num_examples == 0:
    raise ValueError(f"dataset {label!r}: split {split!r} has no examples ({path})")
  return builder.as_data_source(split)


class Limit:
  """The first `n` examples of a source (fast evaluation of long splits)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source)) if n else len(source)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]
