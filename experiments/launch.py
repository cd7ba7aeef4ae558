"""What every launcher shares: flags for multi-host runs, the run's config,
quiet logs, the compilation cache, and one-line errors; and the flags some share
(the studies': `define_study_flags`, `define_record_flags`; the benchmark's and
the profile's model: `define_model_flags`).

  launch.run(main)                      # instead of absl's app.run(main)

* Logs: the library and its dependencies (orbax, absl) log at WARNING unless
  `--verbosity` is given (`--verbosity=0` for INFO, `1` for debug); commands
  print their own progress and one result table.
* Errors a user can fix (a bad flag, a missing or malformed file, an unbuilt
  dataset, a config that does not fit a checkpoint) end with one line
  `error: ...` on stderr and exit status 1; a traceback only for real bugs, or
  with `--verbosity=1`. Exit status 3: the command finished but skipped items
  (each one reported). Any other OSError (a read-only or full disk, a file where
  a folder should be) is one line `error: PATH: what went wrong`, exit status 1.
  Ctrl-C: one line `error: interrupted (Ctrl-C)`, exit status 130 (training
  saves first, see `experiments.train`).
* Compilation cache: JAX's persistent cache in `--compilation_cache_dir`
  (default `~/.cache/heatpose_jax/jax`; empty to disable), so a second run of
  the same model starts without recompiling.
"""

from __future__ import annotations

import dataclasses
import errno
import logging as py_logging
import os
import re
import shlex
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from heatpose_jax import from_config, predictor
from heatpose_jax.core import workdir_lock
from heatpose_jax.training import checkpoints

EXIT_ERROR = 1
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() first (multi-host: SLURM, TPU pods, or "
  "--coordinator_address/--num_processes/--process_id).",
)
flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-host without SLURM)."
)
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host without SLURM).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host without SLURM).")
flags.DEFINE_string("cpu_collectives", None, "'gloo' for multi-process CPU runs.")
flags.DEFINE_string(
  "compilation_cache_dir",
  os.environ.get("JAX_COMPILATION_CACHE_DIR")
  or os.path.join(os.path.expanduser("~"), ".cache", "heatpose_jax", "jax"),
  "JAX's persistent compilation cache (default $JAX_COMPILATION_CACHE_DIR, else "
  "~/.cache/heatpose_jax/jax; '' disables it).",
)

# The flags the functions below define belong to the launcher that calls them (its
# `--help` lists them), not to this module.
flags.disclaim_key_flags()

# Errors a user can act on: one line, no traceback.
EXPECTED = (
  ValueError,
  FileNotFoundError,
  PermissionError,
  IsADirectoryError,
  FloatingPointError,
  app.UsageError,
)


class Skipped(Exception):  # noqa: N818 - a result, not a failure
  """Raised by a command that finished but skipped items: exit status 3."""


def _verbose() -> bool:
  f = flags.FLAGS
  return f.is_parsed() and f["verbosity"].present and f.verbosity >= 1


def _quiet_logs() -> None:
  f = flags.FLAGS
  if f["verbosity"].present:
    return
  logging.set_verbosity(logging.WARNING)
  py_logging.getLogger().setLevel(py_logging.WARNING)
  for name in ("absl", "orbax", "jax", "tensorflow_datasets", "grain"):
    py_logging.getLogger(name).setLevel(py_logging.WARNING)


def _usable_cache(path: str) -> bool:
  """Whether the compilation cache can live in `path`; if not, one warning line (the
  command runs, compiling without the cache) instead of JAX's warning at every compile."""
  from heatpose_jax.core import outputs

  try:
    outputs.prepare_dir(path, "--compilation_cache_dir")
  except outputs.OutputError as e:
    print(f"warning: {e}; compiling without the cache", file=sys.stderr)
    return False
  return True


def setup() -> None:
  """Quiet logs, the compilation cache, and the distributed runtime when asked."""
  f = flags.FLAGS
  _quiet_logs()
  if f.compilation_cache_dir and _usable_cache(f.compilation_cache_dir):
    jax.config.update("jax_compilation_cache_dir", f.compilation_cache_dir)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  if f.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", f.cpu_collectives)
  if f.distributed or f.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=f.coordinator_address,
      num_processes=f.num_processes,
      process_id=f.process_id,
    )
  logging.info(
    "process %d/%d, %d local / %d global devices (%s), pid %d",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
    os.getpid(),
  )


def config(workdir: str | None = None):
  """The run's config: `--config` (with its `--config.*` overrides) if given,
  else `WORKDIR/config.json`. A broken `--config` is a one-line ValueError."""
  f = flags.FLAGS
  if "config" in f and f["config"].present:
    try:
      cfg = f.config
      cfg.to_dict()  # a config that failed to load raises only when first used
    except (OSError, AttributeError, KeyError, ValueError) as e:
      raise ValueError(f"--config={f['config'].config_filename}: {_last_line(e)}") from None
    if cfg is None:
      raise ValueError("--config: the config file returned nothing")
    from_config.check(cfg)
    return cfg
  if workdir:
    return from_config.load_run_config(workdir)
  raise app.UsageError("--config is required")


def command_line(module: str) -> str:
  """This invocation as the command a report records: `python -m MODULE ARGS...`."""
  return f"python -m {module} " + shlex.join(sys.argv[1:])


def define_study_flags(
  workdir_help: str, *, max_parallel: int, checkpoints_per_run: int, checkpoints_help: str
) -> None:
  """The flags of a study that trains runs as subprocesses (`studies.runs`): the
  base `--config` and `--workdir` (both required), `--max_parallel` and
  `--checkpoints_per_run`. Passed on by `study_args`."""
  config_flags.DEFINE_config_file("config", None, "Base config file, with :args.", lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)
  flags.DEFINE_integer(
    "max_parallel",
    max_parallel,
    "Training runs at a time (one subprocess each); 0: in this process.",
  )
  flags.DEFINE_integer("checkpoints_per_run", checkpoints_per_run, checkpoints_help)
  flags.mark_flags_as_required(["config", "workdir"])


def define_record_flags(outputs: str, figures_help: str) -> None:
  """The flags of a study that keeps one record per run and rewrites its outputs
  from all of them (`studies.records`): `--out_dir` (for `outputs`),
  `--figures_dir`, `--seeds`, `--train`. Passed on by `record_args`."""
  flags.DEFINE_string("out_dir", "", f"{outputs} (default WORKDIR).")
  flags.DEFINE_string("figures_dir", "", figures_help)
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seed indices (seed = config.seed + index).")
  flags.DEFINE_bool(
    "train", True, "Train missing runs; --notrain only measures finished runs and reports."
  )


def record_args() -> dict:
  """The `run_study` arguments of `define_record_flags`' flags."""
  f = flags.FLAGS
  return dict(
    out_dir=f.out_dir or f.workdir,
    seeds=[int(s) for s in f.seeds],
    train=f.train,
    figures_dir=f.figures_dir,
  )


def study_args(module: str) -> dict:
  """The `run_study` / `run_experiments` arguments of `define_study_flags`' flags,
  the training runs' arguments and this command (`module`'s)."""
  f = flags.FLAGS
  return dict(
    max_parallel=f.max_parallel,
    train_args=study_train_args(),
    checkpoints_per_run=f.checkpoints_per_run,
    command=command_line(module),
  )


def run_study(main) -> None:
  """`run(main)` for a launcher whose training subprocesses share the accelerator:
  this process allocates device memory on demand."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  run(main)


def study_train_args() -> list[str]:
  """`experiments.train` arguments for a study's runs: this command's `--config`
  (absolute) and `--config.*` overrides, and its compilation cache."""
  from studies import runs

  f = flags.FLAGS
  return runs.train_args(sys.argv[1:], f["config"].config_filename, f.compilation_cache_dir)


def tiny_default(flag: flags.FlagHolder, tiny_value):
  """`flag`'s value, or `tiny_value` under the launcher's --tiny when the flag was not
  given on the command line."""
  f = flags.FLAGS
  tiny = "tiny" in f and f.tiny
  return tiny_value if tiny and not f[flag.name].present else flag.value


@dataclasses.dataclass(frozen=True)
class ModelFlags:
  """The paper's model on the command line, as the benchmark and the profile measure
  it: `--model`, `--pool`, `--dtype`, `--train_batch` and `--tiny`."""

  tiny: flags.FlagHolder
  model: flags.FlagHolder
  pool: flags.FlagHolder
  dtype: flags.FlagHolder
  train_batch: flags.FlagHolder

  def config(self):
    """`studies.benchmark.model_config` of these flags (under --tiny without
    --train_batch, a batch of max(8, the number of devices))."""
    from studies import benchmark

    return benchmark.model_config(
      self.model.value,
      pool=self.pool.value,
      dtype=self.dtype.value,
      batch_size=tiny_default(self.train_batch, max(8, jax.device_count())),
      tiny=self.tiny.value,
    )


def define_model_flags(tiny_help: str) -> ModelFlags:
  """Defines `ModelFlags`' flags (`--tiny`: `tiny_help`)."""
  return ModelFlags(
    tiny=flags.DEFINE_bool("tiny", False, tiny_help),
    model=flags.DEFINE_enum("model", "mpii", ["mpii", "flic"], "The paper's model."),
    pool=flags.DEFINE_integer("pool", 8, "Pooling factor."),
    dtype=flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Compute dtype."),
    train_batch=flags.DEFINE_integer("train_batch", 64, "Global training batch (tiny: 8)."),
  )


def _last_line(e: BaseException) -> str:
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  # ml_collections wraps the cause: its last line says what went wrong.
  return lines[-1] if lines else type(e).__name__


def one_line(e: BaseException, limit: int = 400) -> str:
  """An exception's message on one line (whitespace folded, at most `limit` chars)."""
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= limit else text[: limit - 1] + "…"


def _has_path(e: BaseException) -> bool:
  return isinstance(e, OSError) and e.filename is not None and e.strerror is not None


def os_error_line(e: OSError) -> str:
  """An OSError as `PATH: what went wrong` (both paths of a rename), on one line."""
  if e.filename is None or e.strerror is None:
    return one_line(e)
  path = os.fsdecode(e.filename)
  what = e.strerror
  if e.errno == errno.EEXIST and os.path.isfile(path):  # os.makedirs on a file
    what = "is a file, not a folder"
  elif e.errno == errno.ENOTDIR:
    what = "a part of the path is a file, not a folder"
  if e.filename2 is not None:
    path += f" -> {os.fsdecode(e.filename2)}"
  return one_line(f"{path}: {what}")


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # A config file that fails to load is wrapped with its traceback: keep what
    # went wrong and which flag it was.
    text = str(e)
    flag = re.match(r"flag (--\S+)", text)
    head = f"{flag.group(1).split('=')[0]}: " if flag and "\n" in text else ""
    sys.exit(f"error: {head}{_last_line(e) if head else one_line(e)}")
  except (AttributeError, KeyError) as e:  # an unknown --config.field
    key = str(e).strip("'\" ")
    bad = [a for a in argv if re.match(rf"^--?config\.(.*\.)?{re.escape(key)}=", a)]
    where = bad[0].split("=")[0] if bad else "--config"
    sys.exit(f"error: {where}: the config has no field {key!r}")


def run(main) -> None:
  """`app.run(main)` with one-line errors and exit status 3 for `Skipped`."""

  def wrapped(argv):
    try:
      main(argv)
    except Skipped as e:
      print(f"done, with skipped items: {e}", file=sys.stderr)
      sys.exit(EXIT_SKIPPED)
    except (*EXPECTED, checkpoints.ShapeMismatch, predictor.ImageError, workdir_lock.InUse) as e:
      if _verbose():
        traceback.print_exc()
      print(f"error: {os_error_line(e) if _has_path(e) else one_line(e)}", file=sys.stderr)
      sys.exit(EXIT_ERROR)
    except OSError as e:
      # The file system said no (a read-only or full disk, a file where a folder
      # should be, a link to nowhere): one line naming the path, what was written stays.
      if _verbose():
        traceback.print_exc()
      print(f"error: {os_error_line(e)}", file=sys.stderr)
      sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and stops itself)
      if _verbose():
        traceback.print_exc()
      print("error: interrupted (Ctrl-C)", file=sys.stderr)
      sys.exit(EXIT_INTERRUPTED)

  app.run(wrapped, flags_parser=_parse_flags)
