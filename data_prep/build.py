r"""Builds a dataset into a TFDS data dir, without TensorFlow (`tfds build` needs it).

  python -m data_prep.build --dataset=synthetic --config=tiny --data_dir=~/tfds
  python -m data_prep.build --dataset=flic --manual_dir=/data/FLIC --data_dir=~/tfds
  python -m data_prep.build --dataset=synthetic --config=tiny --num_train=1000 \
      --seed=3 --data_dir=~/tfds   # a custom config `tiny-num_train1000-seed3`

The dataset lands in `DATA_DIR/NAME/CONFIG/VERSION` (FLIC, without configs:
`DATA_DIR/flic/VERSION`). TFDS writes into an `incomplete.XXXXXX_VERSION` sibling
and renames it when every split is written, so an interrupted build leaves no
dataset that looks complete (a stale `incomplete.*` directory may stay; delete
it). Read it back with `tfds.builder(NAME, data_dir=DATA_DIR)` after `import
data_prep`, or with `tfds.builder_from_directory(DATA_DIR/NAME/CONFIG/VERSION)`
without importing anything from `data_prep`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow_datasets as tfds
from absl import app, flags

from data_prep import flic, lsp, mpii
from heatpose_jax import datasets, synthetic_dataset

# --dataset -> builder class.
BUILDERS: dict[str, type[tfds.core.DatasetBuilder]] = {
  "flic": flic.Flic,
  "mpii": mpii.Mpii,
  "lsp": lsp.Lsp,
  "synthetic": synthetic_dataset.Synthetic,
}
# Flags that override a field of the chosen BuilderConfig (where it has one).
OVERRIDE_FLAGS = (
  "num_train", "num_test", "seed", "height", "width", "label_noise", "distractor_prob",
)  # fmt: skip


def needs_manual_dir(dataset: str) -> bool:
  """Whether the builder reads its source files from a manual dir."""
  return bool(getattr(BUILDERS[dataset], "MANUAL_DOWNLOAD_INSTRUCTIONS", None))


def make_config(
  dataset: str, config: str | None, overrides: dict
) -> tfds.core.BuilderConfig | None:
  """The BuilderConfig named `config` (or the default), with `overrides` applied.

  Args:
    dataset: a key of `BUILDERS`.
    config: a config name of that builder, or None for its default.
    overrides: flag name -> value for fields of the config; None values are ignored.

  Returns:
    The config (a derived one, named after its changes, if any override
    applies), or None for a builder without configs.

  Raises:
    app.UsageError: naming the flag that does not apply.
  """
  cls = BUILDERS[dataset]
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if not cls.BUILDER_CONFIGS:
    if config or overrides:
      bad = "--config" if config else "--" + sorted(overrides)[0]
      raise app.UsageError(f"{bad}: --dataset={dataset} has no configs")
    return None
  name = config or cls.DEFAULT_BUILDER_CONFIG_NAME or cls.BUILDER_CONFIGS[0].name
  known = {c.name: c for c in cls.BUILDER_CONFIGS}
  if name not in known:
    raise app.UsageError(f"--config={name}: unknown for {dataset}; known: {sorted(known)}")
  base = known[name]
  fields = datasets.overridable_fields(base)
  for key in overrides:
    if key not in fields:
      raise app.UsageError(f"--{key} does not apply to --dataset={dataset} (fields: {fields})")
  return datasets.derive_config(base, **overrides)


def build(
  dataset: str,
  data_dir: str | Path,
  *,
  manual_dir: str | Path | None = None,
  config: str | None = None,
  overwrite: bool = False,
  **overrides,
) -> tfds.core.DatasetBuilder:
  """Prepares `dataset` in `data_dir` and returns its builder.

  Args:
    dataset: `flic`, `mpii`, `lsp` or `synthetic`.
    data_dir: the TFDS data dir.
    manual_dir: the directory of the source files (FLIC, MPII, LSP).
    config: a config name (e.g. `tiny`); None for the builder's default.
    overwrite: rebuild even if the dataset is already prepared.
    **overrides: config fields to change (`num_train=1000, seed=3`), see
      `make_config`.

  Raises:
    app.UsageError: a bad argument, named as its command-line flag.
  """
  if dataset not in BUILDERS:
    raise app.UsageError(f"--dataset={dataset}: unknown; known: {sorted(BUILDERS)}")
  if needs_manual_dir(dataset):
    if not manual_dir:
      raise app.UsageError(
        f"--manual_dir is required for --dataset={dataset}.\n"
        f"{BUILDERS[dataset].MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    if not Path(manual_dir).expanduser().is_dir():
      raise app.UsageError(f"--manual_dir={manual_dir}: not a directory")
    manual_dir = str(Path(manual_dir).expanduser())
  elif manual_dir:
    logging.warning("--manual_dir is ignored for --dataset=%s", dataset)
    manual_dir = None
  cfg = make_config(dataset, config, overrides)
  data_dir = Path(data_dir).expanduser()
  kwargs = {"data_dir": str(data_dir)}
  if cfg is not None:
    kwargs["config"] = cfg
  builder = BUILDERS[dataset](**kwargs)
  mode = tfds.download.GenerateMode
  download_config = tfds.download.DownloadConfig(
    manual_dir=manual_dir,
    # Nothing is hosted for these datasets; don't let TFDS probe GCS.
    try_download_gcs=False,
    # REUSE_CACHE_IF_EXISTS deletes a prepared version before rebuilding it.
    download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
  )
  builder.download_and_prepare(download_config=download_config)
  stale = sorted(Path(builder.data_dir).parent.glob("incomplete.*"))
  if stale:
    logging.warning("stale directories of interrupted builds (safe to delete): %s", stale)
  return builder


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "Dataset to build.")
  flags.DEFINE_string("data_dir", None, "TFDS data dir to write to.")
  flags.DEFINE_string(
    "manual_dir", None, "Source files (FLIC, MPII, LSP); see data_prep/README.md."
  )
  flags.DEFINE_string("config", None, "Builder config name (default: the builder's default).")
  flags.DEFINE_bool("overwrite", False, "Rebuild even if already prepared.")
  flags.DEFINE_integer("num_train", None, "Override: training examples (synthetic, lsp).")
  flags.DEFINE_integer("num_test", None, "Override: test examples (synthetic).")
  flags.DEFINE_integer("seed", None, "Override: base seed (synthetic).")
  flags.DEFINE_integer("height", None, "Override: image height (synthetic).")
  flags.DEFINE_integer("width", None, "Override: image width (synthetic).")
  flags.DEFINE_float("label_noise", None, "Override: label noise sigma in pixels (synthetic).")
  flags.DEFINE_float("distractor_prob", None, "Override: P(second person) (synthetic).")
  flags.mark_flags_as_required(["dataset", "data_dir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  overrides = {k: FLAGS[k].value for k in OVERRIDE_FLAGS}
  builder = build(
    FLAGS.dataset,
    FLAGS.data_dir,
    manual_dir=FLAGS.manual_dir,
    config=FLAGS.config,
    overwrite=FLAGS.overwrite,
    **overrides,
  )
  print(f"{builder.info.full_name} written to {builder.data_dir}")
  for split, info in sorted(builder.info.splits.items()):
    print(f"  {split}: {info.num_examples} examples")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
