r"""Builds a dataset into a TFDS data dir, without TensorFlow (`tfds build` needs it).

  python -m data_prep.build --dataset=synthetic --config=tiny --data_dir=~/tfds
  python -m data_prep.build --dataset=flic --manual_dir=/data/FLIC --data_dir=~/tfds
  python -m data_prep.build --dataset=synthetic --config=tiny --num_train=1000 \
      --seed=3 --data_dir=~/tfds   # a custom config `tiny-num_train1000-seed3`
  python -m data_prep.build --dataset_module=my_datasets --dataset=mine --data_dir=~/tfds
  python -m data_prep.build --dataset=coco_keypoints --config=coco \
      --annotations=train=person_keypoints_train2017.json \
      --annotations=validation=person_keypoints_val2017.json --images=DIR --data_dir=~/tfds

`--dataset` is any dataset of `heatpose_jax.data.dataset_specs.SPECS`, or its TFDS name
(`coco_keypoints` is the dataset `coco`); `--dataset_module` imports a module first
that registers more (`dataset_specs.register`). `--annotations`, `--images` and
`--flip_pairs` say where a builder's source files are (COCO format,
`data_prep/coco_keypoints.py`): they are the builder's arguments (its `SOURCES`),
not config fields, so the config keeps its name and directory.

The dataset lands in `DATA_DIR/NAME/CONFIG/VERSION` (FLIC, without configs:
`DATA_DIR/flic/VERSION`). TFDS writes into an `incomplete.XXXXXX_VERSION` sibling
and renames it when every split is written, so an interrupted build leaves no
dataset that looks complete (a stale `incomplete.*` directory may stay; delete
it). `--overwrite` of a prepared dataset builds the new one in a fresh
`DATA_DIR/incomplete.rebuild-NAME.XXXXXX/` and swaps it in only once complete, so
a failed or killed rebuild leaves the previous dataset in place and readable.
One build per data dir at a time: a build holds `DATA_DIR/build.lock`, and a
second build into the same data dir exits at once (status 1) with one line
naming the data dir and the first build's PID (training that prepares synthetic
people on demand waits for it instead).
Read it back with `tfds.builder(NAME, data_dir=DATA_DIR)` after `import
data_prep`, or with `tfds.builder_from_directory(DATA_DIR/NAME/CONFIG/VERSION)`
without importing anything from `data_prep`.

Exit status: 0 built (or already prepared) with nothing skipped; 3 built, but rows
were skipped or joints marked invalid (the last line of stdout says how many and
why; `docs/data.md` lists the rules); 1 an error of the input (a bad flag, a
missing manual dir or annotation file, a malformed annotation file, an empty
split): one line `error: ...` on stderr, with the traceback only at
`--verbosity=1` or higher.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import app, flags
from absl import logging as absl_logging

from data_prep import common
from heatpose_jax.core import workdir_lock
from heatpose_jax.data import dataset_specs, features

# The project-wide exit statuses.
EXIT_OK, EXIT_ERROR, EXIT_SKIPPED = 0, 1, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT
# Errors of the input that the CLI reports as one line (anything else is a bug: traceback).
EXPECTED_ERRORS = (
  app.UsageError,
  FileNotFoundError,
  NotADirectoryError,
  ValueError,
  workdir_lock.InUse,
)
# `--overwrite` builds into DATA_DIR/<this>NAME.XXXXXX/ (one level above TFDS's own
# `incomplete.*` dirs, outside DATA_DIR/NAME where readers look for versions).
STAGING_PREFIX = "incomplete.rebuild-"
# Flags that override a field of the chosen BuilderConfig (where it has one):
# (name, type, what it overrides, of which datasets).
_OVERRIDES = (
  ("num_train", int, "training examples (synthetic, lsp)"),
  ("num_test", int, "test examples (synthetic)"),
  ("seed", int, "base seed (synthetic)"),
  ("height", int, "image height (synthetic)"),
  ("width", int, "image width (synthetic)"),
  ("label_noise", float, "label noise sigma in pixels (synthetic)"),
  ("distractor_prob", float, "P(second person) (synthetic)"),
)
OVERRIDE_FLAGS = tuple(name for name, _, _ in _OVERRIDES)
# Flags that say where the source files are: builder arguments (a builder's `SOURCES`).
SOURCE_FLAGS = ("annotations", "images", "flip_pairs")


def spec(dataset: str) -> dataset_specs.DatasetSpec:
  """The registered spec of `--dataset`.

  Raises:
    app.UsageError: an unknown dataset (the message lists the known ones).
  """
  found = dataset_specs.SPECS.get(dataset) or dataset_specs.for_tfds_name(dataset)
  if found is None:
    raise app.UsageError(
      f"--dataset={dataset}: unknown; known: {sorted(dataset_specs.SPECS)} "
      "(or --dataset_module=MODULE that registers it)"
    )
  return found


def needs_manual_dir(dataset: str) -> bool:
  """Whether the builder reads its source files from a manual dir."""
  return spec(dataset).manual


def make_config(
  dataset: str, config: str | None, overrides: dict
) -> tfds.core.BuilderConfig | None:
  """The BuilderConfig named `config` (or the default), with `overrides` applied.

  Args:
    dataset: a registered dataset (`dataset_specs.SPECS`).
    config: a config name of that builder, or None for its default.
    overrides: flag name -> value for fields of the config; None values are ignored.

  Returns:
    The config (a derived one, named after its changes, if any override
    applies), or None for a builder without configs.

  Raises:
    app.UsageError: naming the flag that does not apply.
  """
  cls = spec(dataset).builder_class()
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
  fields = features.overridable_fields(base)
  for key in overrides:
    if key not in fields:
      raise app.UsageError(f"--{key} does not apply to --dataset={dataset} (fields: {fields})")
  return features.derive_config(base, **overrides)


def source_args(dataset: str, sources: dict) -> dict:
  """The builder arguments of the `SOURCE_FLAGS` given (None values ignored):
  `annotations` as ((split, path), ...) from `SPLIT=FILE` strings, paths absolute.

  Raises:
    app.UsageError: a flag the builder does not take (its `SOURCES`), an
      `--annotations` value that is not SPLIT=FILE, or a split named twice.
  """
  sources = {k: v for k, v in sources.items() if v is not None}
  takes = getattr(spec(dataset).builder_class(), "SOURCES", ())
  for key in sources:
    if key not in takes:
      raise app.UsageError(f"--{key} does not apply to --dataset={dataset}")
  if "annotations" in sources:
    sources["annotations"] = parse_annotations(sources["annotations"])
  if "images" in sources:
    sources["images"] = os.path.abspath(os.path.expanduser(sources["images"]))
  return sources


def parse_annotations(values) -> tuple[tuple[str, str], ...]:
  """`--annotations` values `SPLIT=FILE` (or (split, file) pairs) → ((split, path), ...)."""
  out = []
  for v in values:
    split, sep, path = v.partition("=") if isinstance(v, str) else (v[0], "=", v[1])
    if not sep or not path or not re.fullmatch(r"[A-Za-z_]\w*", split):
      raise app.UsageError(
        f"--annotations={v}: expected SPLIT=FILE.json, SPLIT a name like train or validation"
      )
    if split in dict(out):
      raise app.UsageError(f"--annotations: split {split!r} named twice")
    out.append((split, os.path.abspath(os.path.expanduser(path))))
  return tuple(out)


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
    dataset: a registered dataset (`flic`, `mpii`, `lsp`, `synthetic`, ...).
    data_dir: the TFDS data dir.
    manual_dir: the directory of the source files (FLIC, MPII, LSP).
    config: a config name (e.g. `tiny`); None for the builder's default.
    overwrite: rebuild even if the dataset is already prepared; the prepared one
      is replaced only once the new one is complete (see `rebuild`).
    **overrides: config fields to change (`num_train=1000, seed=3`), see
      `make_config`; and the `SOURCE_FLAGS` (`annotations=["train=a.json"],
      images=DIR`), see `source_args`.

  Returns:
    The builder of the prepared dataset. `builder.skip_counters` lists one
    `common.SkipCounter` per split written by this call (none when an already
    prepared dataset was reused, or for builders that skip nothing).

  Raises:
    app.UsageError: a bad argument, named as its command-line flag.
    FileNotFoundError: a missing manual dir or annotation file.
    common.DataError: a malformed annotation file, or a split left empty.
  """
  cls = spec(dataset).builder_class()
  if needs_manual_dir(dataset):
    if not manual_dir:
      raise app.UsageError(
        f"--manual_dir is required for --dataset={dataset} (see data_prep/manual_dirs.md).\n"
        f"{getattr(cls, 'MANUAL_DOWNLOAD_INSTRUCTIONS', '')}"
      )
    if not Path(manual_dir).expanduser().is_dir():
      raise app.UsageError(f"--manual_dir={manual_dir}: not a directory")
    manual_dir = str(Path(manual_dir).expanduser())
  elif manual_dir:
    logging.warning("--manual_dir is ignored for --dataset=%s", dataset)
    manual_dir = None
  sources = source_args(dataset, {k: overrides.pop(k, None) for k in SOURCE_FLAGS})
  cfg = make_config(dataset, config, overrides)
  data_dir = Path(data_dir).expanduser()

  def make(where: Path) -> tfds.core.DatasetBuilder:
    kwargs = {"data_dir": str(where), **sources}
    if cfg is not None:
      kwargs["config"] = cfg
    return cls(**kwargs)

  download_config = tfds.download.DownloadConfig(
    manual_dir=manual_dir,
    # Nothing is hosted for these datasets; don't let TFDS probe GCS.
    try_download_gcs=False,
  )
  # One build per data dir at a time: a second one stops at once, naming the first one's PID.
  with workdir_lock.hold(str(data_dir), workdir_lock.BUILD_LOCK, what=f"--data_dir={data_dir}"):
    builder = make(data_dir)
    if overwrite and builder.is_prepared():
      builder = rebuild(make, data_dir, download_config, label=dataset)
    else:
      builder.download_and_prepare(download_config=download_config)
  if not hasattr(builder, "skip_counters"):  # reused, or a builder that skips nothing
    builder.skip_counters = []
  stale = sorted(Path(builder.data_dir).parent.glob("incomplete.*"))
  stale += sorted(data_dir.glob(f"{STAGING_PREFIX}{dataset}.*"))
  if stale:
    logging.warning(
      "stale directories of interrupted builds (delete them unless a build is running): %s",
      stale,
    )
  for previous in data_dir.glob(f"{STAGING_PREFIX}{dataset}.*/previous"):
    # Only the two-rename fallback of `swap_dirs`, killed between its renames, leaves this.
    logging.warning("%s holds a dataset replaced by an interrupted --overwrite", previous)
  return builder


def rebuild(
  make: Callable[[Path], tfds.core.DatasetBuilder],
  data_dir: Path,
  download_config: tfds.download.DownloadConfig,
  label: str,
) -> tfds.core.DatasetBuilder:
  """Rebuilds a prepared dataset without ever leaving it unreadable.

  TFDS's `incomplete.*` idea one level up: the new dataset is built under a fresh
  `DATA_DIR/incomplete.rebuild-LABEL.XXXXXX/`, and its version directory is swapped
  with the prepared one only once TFDS has finished it. On failure (or a kill)
  before that, the prepared dataset is untouched; the staging dir is removed
  unless the process was killed.

  Args:
    make: data dir -> the dataset's builder (same class and config).
    data_dir: the TFDS data dir holding the prepared dataset.
    download_config: as for `download_and_prepare`.
    label: the dataset name, for the staging dir's name.

  Returns:
    A builder of the new dataset in `data_dir`, with the new build's `skip_counters`.
  """
  final = Path(make(data_dir).data_dir)
  staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{label}.", dir=data_dir))
  try:
    staged = make(staging)
    staged.download_and_prepare(download_config=download_config)
    swap_dirs(Path(staged.data_dir), final, staging / "previous")
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  builder = make(data_dir)
  builder.skip_counters = getattr(staged, "skip_counters", [])
  logging.info("replaced %s with the new build", final)
  return builder


def swap_dirs(new: Path, old: Path, trash: Path) -> None:
  """Puts directory `new` at `old`; the previous `old` ends at `new` or `trash`.

  Atomic where Linux's `renameat2(RENAME_EXCHANGE)` works (readers see the old or
  the new dataset, never none); elsewhere two renames, between which a kill would
  leave the previous dataset in `trash` (inside the staging dir).
  """
  if _exchange(new, old):
    return
  os.rename(old, trash)
  os.rename(new, old)


def _exchange(a: Path, b: Path) -> bool:
  """Atomically swaps two paths; False where the OS or file system cannot."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):  # not Linux, or glibc older than 2.28
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(err, os.strerror(err), str(a), None, str(b))


def skip_summary(counters: Sequence[common.SkipCounter]) -> str:
  """One line: how many rows were skipped and joints marked invalid, and why; '' if none."""
  rows = sum(sum(c.counts.values()) for c in counters)
  joints = sum(sum(c.joints.values()) for c in counters)
  if not rows and not joints:
    return ""
  why = "; ".join(c.describe() for c in counters if c.total)
  return f"skipped {rows} rows and marked {joints} joints invalid: {why}"


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # A string checked against the registry (`spec`) when the command runs, after
  # --dataset_module has registered its datasets.
  flags.DEFINE_string(
    "dataset",
    None,
    f"Dataset to build: {', '.join(dataset_specs.SPECS)}, or one --dataset_module registers.",
  )
  flags.DEFINE_string(
    "dataset_module",
    None,
    "Module(s) to import first (comma-separated) that register datasets "
    "(heatpose_jax.data.dataset_specs.register).",
  )
  flags.DEFINE_string("data_dir", None, "TFDS data dir to write to.")
  flags.DEFINE_string(
    "manual_dir", None, "Source files (FLIC, MPII, LSP); see data_prep/README.md."
  )
  flags.DEFINE_string("config", None, "Builder config name (default: the builder's default).")
  flags.DEFINE_bool(
    "overwrite", False, "Rebuild even if prepared; the old one stays until the new one is complete."
  )
  for name, kind, what in _OVERRIDES:
    define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
    define(name, None, f"Override: {what}.")
  flags.DEFINE_multi_string(
    "annotations", None, "SPLIT=FILE.json, once per split: COCO-format annotation files."
  )
  flags.DEFINE_string("images", None, "The images folder of the --annotations files.")
  flags.DEFINE_string(
    "flip_pairs", None, "LEFT:RIGHT,... joint names flipped together (COCO format), or none."
  )
  flags.mark_flags_as_required(["dataset", "data_dir"])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag reported as one `error:` line (exit 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def _error(e: Exception) -> int:
  """Reports an expected error as one line (plus the traceback at --verbosity >= 1)."""
  if FLAGS.verbosity >= 1:
    traceback.print_exc()
  lines = str(e).splitlines()
  print(f"error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
  return EXIT_ERROR


def _quiet_logs() -> None:
  """Warnings only (as `experiments.train`), unless `--verbosity` is given: absl's and
  TFDS's INFO lines are noise to a user; the progress bars stay (stderr)."""
  if FLAGS["verbosity"].present:
    return
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger().setLevel(logging.WARNING)
  for name in ("absl", "tensorflow_datasets", "etils", "array_record"):
    logging.getLogger(name).setLevel(logging.WARNING)


def main(argv) -> int:
  _quiet_logs()
  try:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    dataset_specs.import_modules(FLAGS.dataset_module)
    overrides = {k: FLAGS[k].value for k in OVERRIDE_FLAGS + SOURCE_FLAGS}
    builder = build(
      FLAGS.dataset,
      FLAGS.data_dir,
      manual_dir=FLAGS.manual_dir,
      config=FLAGS.config,
      overwrite=FLAGS.overwrite,
      **overrides,
    )
  except EXPECTED_ERRORS as e:
    return _error(e)
  except KeyboardInterrupt:  # TFDS removes its incomplete dir; a prepared dataset stays as it was
    print(
      f"error: interrupted (Ctrl-C): nothing was built in {FLAGS.data_dir}; rerun the command",
      file=sys.stderr,
    )
    return EXIT_INTERRUPTED
  print(f"{builder.info.full_name} written to {builder.data_dir}")
  for split, info in sorted(builder.info.splits.items()):
    print(f"  {split}: {info.num_examples} examples")
  summary = skip_summary(getattr(builder, "skip_counters", []))
  if summary:
    print(summary)
    return EXIT_SKIPPED
  return EXIT_OK


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
