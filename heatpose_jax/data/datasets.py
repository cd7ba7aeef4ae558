"""Where the built datasets are: `data_source` reads a built split without
importing `data_prep`, and prepares the datasets that need no files
(`DatasetSpec.generated`: synthetic people) on demand, as TFDS itself does;
`find_spec` finds a dataset's spec (registered, or stored by its build). The
features every builder writes are defined in `features`.
"""

from __future__ import annotations

import json
import logging
import os

from heatpose_jax.data import dataset_specs


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

  Without `config_name`: a dataset built without configs, else its spec's
  `default_config` and never another config (a config asking for the synthetic
  256×256 renders must not get the quick start's 64×64 `small` because only that
  one is built); a dataset without a default config takes its only built config.

  Raises:
    ValueError: no config named, the dataset has no default config, and several
      configs are built.
  """
  root = os.path.join(data_dir, name)
  if config_name:
    return _prepared_dir(os.path.join(root, config_name))
  found = _prepared_dir(root)
  if found or not os.path.isdir(root):
    return found
  spec = dataset_specs.for_tfds_name(name)
  if spec is not None and spec.default_config:
    return _prepared_dir(os.path.join(root, spec.default_config))
  builds = {c: d for c in sorted(os.listdir(root)) if (d := _prepared_dir(os.path.join(root, c)))}
  if len(builds) > 1:
    raise ValueError(
      f"dataset {name!r} in {data_dir!r} has several configs built ({', '.join(builds)}) "
      "and no default one: name one (config.tfds_config)"
    )
  return next(iter(builds.values()), None)


def build_command(name: str, config_name: str, data_dir: str) -> str:
  cfg = f" --config={config_name}" if config_name else ""
  return f"python -m data_prep.build --dataset={name}{cfg} --data_dir={data_dir} [--manual_dir=...]"


def built_spec(
  name: str, config_name: str = "", data_dir: str = ""
) -> dataset_specs.DatasetSpec | None:
  """The spec a build stored in its metadata (`features.spec_metadata`), or None.

  Args:
    name: the TFDS name; config_name, data_dir: as `data_source`.
  """
  path = find_prepared(name, config_name, default_data_dir(data_dir))
  meta = os.path.join(path, "metadata.json") if path else ""
  if not meta or not os.path.exists(meta):
    return None
  with open(meta) as f:
    data = json.load(f).get(dataset_specs.METADATA_KEY)
  return None if data is None else dataset_specs.DatasetSpec.from_json(data)


def find_spec(
  name: str, *, tfds_name: str = "", config_name: str = "", data_dir: str = ""
) -> dataset_specs.DatasetSpec | None:
  """The spec of dataset `name`: the registered one, else the one the build of
  `tfds_name` (default `name`) stored in its metadata (registered then); None
  where neither knows it.

  A registered spec marked `from_build` (COCO format: the joints are the annotation
  file's) gives way to the spec its build stored, which replaces it in the
  registry (a process works with one such build at a time); unbuilt, it stands.
  """
  registered = dataset_specs.SPECS.get(name)
  if registered is not None and not registered.from_build:
    return registered
  if registered is not None:
    tfds_name = tfds_name or registered.tfds_name
  spec = built_spec(tfds_name or name, config_name, data_dir)
  if spec is None or spec.name != name:
    return registered
  return dataset_specs.register(spec, replace=True)


def prepare_generated(spec: dataset_specs.DatasetSpec, config_name: str, data_dir: str):
  """Builds config `config_name` ("" without configs) of a `generated` dataset; its builder."""
  import tensorflow_datasets as tfds

  kwargs = {"config": config_name} if config_name else {}
  builder = spec.builder_class()(data_dir=data_dir, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def data_source(name: str, split: str, *, config_name: str = "", data_dir: str = "", prepare=True):
  """A random-access source of one split's feature dicts (`as_data_source`).

  Args:
    name: the TFDS name (`synthetic`, `flic`, `mpii`, `lsp`, a registered one's).
    split: e.g. 'train', 'test', 'validation'.
    config_name: builder config ("" for the default: `find_prepared`).
    data_dir: the TFDS data dir ("" → `default_data_dir()`).
    prepare: build a missing dataset whose spec is `generated` (named configs only).

  Raises:
    FileNotFoundError: the dataset is not built (the message gives the command).
    ValueError: no such split, or an empty one.
  """
  import tensorflow_datasets as tfds

  data_dir = default_data_dir(data_dir)
  label = name + (f"/{config_name}" if config_name else "")
  path = find_prepared(name, config_name, data_dir)
  spec = dataset_specs.for_tfds_name(name)
  if path is None and prepare and spec is not None and spec.generated:
    from heatpose_jax.core import workdir_lock

    cfg = config_name or spec.default_config
    # Named configs only: a custom one (`tiny-num_train7`) is built explicitly.
    if cfg in spec.configs or not (cfg or spec.configs):
      label_cfg = name + (f"/{cfg}" if cfg else "")
      logging.warning(
        "dataset %s is not built in %s: preparing it now (rendered, no files needed)",
        label_cfg,
        data_dir,
      )
      # One build per data dir: another process preparing it now is waited for.
      with workdir_lock.hold(
        data_dir, workdir_lock.BUILD_LOCK, what=f"data dir {data_dir}", wait=True
      ):
        if find_prepared(name, cfg, data_dir) is None:
          prepare_generated(spec, cfg, data_dir)
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
