"""Where the built datasets are: `data_source` reads a built split without
importing `data_prep`, and prepares the datasets that need no files (synthetic
people) on demand, as TFDS itself does. The features every builder writes are
defined in `features`.
"""

from __future__ import annotations

import logging
import os

# Datasets rendered from a seed: `data_source` builds them when they are missing.
GENERATED = ("synthetic",)


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
    from heatpose_jax import synthetic_dataset, workdir_lock

    cfg = config_name or synthetic_dataset.DEFAULT_CONFIG
    if cfg in synthetic_dataset.CONFIGS:
      logging.warning(
        "dataset %s/%s is not built in %s: preparing it now (rendered, no files needed)",
        name,
        cfg,
        data_dir,
      )
      # One build per data dir: another process preparing it now is waited for.
      with workdir_lock.hold(
        data_dir, workdir_lock.BUILD_LOCK, what=f"data dir {data_dir}", wait=True
      ):
        if find_prepared(name, cfg, data_dir) is None:
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
