"""The training runs of the paper's experiments: names, configs, and training.

A run is the base config plus overrides (`run_overrides`), trained into
`workdir/runs/<name>[_seed<k>]/` by `train.train_and_evaluate`, either in this
process or as `python -m experiments.train` subprocesses, several at a time
(`train_runs`). A run whose final checkpoint and final evaluation exist is
finished and reused; an unfinished one resumes. Every checkpoint is kept
(`checkpoint_overrides`): the experiments read the phase-1 checkpoint and the
validation loss at each of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from heatpose_jax import config_changes, from_config, train
from heatpose_jax.training import checkpoints

POOLS = (4, 8, 16)
# The shared-features and dropout comparisons run at this pooling (the paper used
# 4x for Fig. 14a; 8x is our main model, see BUILD_NOTES.md).
MAIN_POOL = 8


def table_pool(base: ml_collections.ConfigDict, pools: Sequence[int] = POOLS) -> int:
  """The pooling of the mpii_table models: the base config's, if one of `pools`."""
  p = int(base.model.pool_factor)
  return p if p in pools else MAIN_POOL


def run_overrides(
  base: ml_collections.ConfigDict,
  name: str,
  *,
  unnormalized_scale: float = 0.0,
  pools: Sequence[int] = POOLS,
) -> dict[str, Any]:
  """Config overrides (dotted keys) that turn `base` into run `name`.

  Args:
    base: the experiments' base config.
    name: 'pool<p>' (p in `pools`) | 'standard8' | 'nodropout8' | 'stddropout8' |
      'unnormalized'.
    unnormalized_scale: canvas px per image px of the 'unnormalized' crop (0: the
      crop mode's default, 1/3, as MPII's `unnormalized` config argument).
    pools: the pooling factors of the study.
  """
  m = MAIN_POOL
  if name in {f"pool{p}" for p in pools}:
    # The paper's models have SpatialDropout whatever the base config chose (the
    # CPU-sized `:tiny` configs switch it off); so has the standard cascade below.
    return {"model.pool_factor": int(name[4:]), "model.dropout": "spatial"}
  if name == f"standard{m}":
    # Fig. 13's comparison, greedy as `configs.common.finish(standard=True)`.
    return {
      "model.pool_factor": m,
      "model.dropout": "spatial",
      "model.standard_cascade": True,
      "phases.fine.steps": int(base.phases.fine.steps) + int(base.phases.joint.steps),
      "phases.joint.steps": 0,
    }
  if name == f"nodropout{m}":
    return {"model.pool_factor": m, "model.dropout": "none"}
  if name == f"stddropout{m}":
    return {"model.pool_factor": m, "model.dropout": "standard"}
  if name == "unnormalized":
    out = {"model.pool_factor": table_pool(base, pools), "crop_mode": "unnormalized"}
    if unnormalized_scale:
      out["image_scale"] = float(unnormalized_scale)
    return out
  raise ValueError(f"unknown run {name!r}")


# Dotted-key config overrides, as the rest of the project applies them.
apply_overrides = from_config.with_overrides


total_steps = from_config.total_steps


def checkpoint_overrides(config: ml_collections.ConfigDict, per_run: int) -> dict[str, int]:
  """`checkpoint_every` (about `per_run` checkpoints) and a `keep_checkpoints` that keeps all
  (phase ends are saved too)."""
  total = total_steps(config)
  every = max(int(config.checkpoint_every), math.ceil(total / max(1, per_run)))
  return {
    "checkpoint_every": every,
    "keep_checkpoints": total // every + len(config.phase_order) + 2,
  }


def unnormalized_image_scale(base: ml_collections.ConfigDict) -> float:
  """Canvas px per image px of the 'unnormalized' crop for `base`'s dataset.

  MPII ('scale_normalized'): 0, i.e. the crop's default 1/3 (the config's
  `unnormalized` argument). Others: the scale that fits the whole (first
  training) image into the canvas, so people keep their size in the images.
  """
  if base.crop_mode == "scale_normalized":
    return 0.0
  if base.crop_mode == "unnormalized":
    raise ValueError(
      "mpii_table compares against a normalized base config; got crop_mode 'unnormalized'"
    )
  ex = from_config.dataset_source(base, base.train_split)[0]
  return float(min(base.input_hw) / max(np.asarray(ex["image_hw"]).tolist()))


@dataclasses.dataclass
class Run:
  """One training run: its directory, config and the overrides that made it."""

  kind: str  # the name in `run_overrides`
  seed_index: int
  directory: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict

  @property
  def name(self) -> str:
    return os.path.basename(self.directory)

  @property
  def total(self) -> int:
    return total_steps(self.config)


def make_run(
  base: ml_collections.ConfigDict,
  workdir: str,
  kind: str,
  seed_index: int,
  *,
  checkpoints_per_run: int,
  unnormalized_scale: float = 0.0,
  pools: Sequence[int] = POOLS,
) -> Run:
  """The run `kind` of seed `base.seed + seed_index` under `workdir/runs/`."""
  o = run_overrides(base, kind, unnormalized_scale=unnormalized_scale, pools=pools)
  if seed_index:
    o["seed"] = int(base.seed) + seed_index
  o.update(checkpoint_overrides(apply_overrides(base, o), checkpoints_per_run))
  name = kind + (f"_seed{seed_index}" if seed_index else "")
  return Run(kind, seed_index, os.path.join(workdir, "runs", name), o, apply_overrides(base, o))


def checkpoint_steps(run_dir: str) -> list[int]:
  """The finished checkpoint steps of a run (orbax gives a checkpoint its bare
  step number only once it is complete)."""
  d = checkpoints.directory(run_dir)
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def is_finished(run: Run) -> bool:
  """The final checkpoint and the final evaluation exist."""
  return run.total in checkpoint_steps(run.directory) and os.path.exists(
    os.path.join(run.directory, "eval", f"{run.total}.json")
  )


def _cli_value(v: Any) -> str:
  if isinstance(v, bool | int | float | str):
    return str(v)
  return repr(tuple(v))


def train_command(run: Run, train_args: Sequence[str]) -> list[str]:
  """The `experiments.train` command line of a run: `train_args` (the base
  `--config=...`, the command line's `--config.*` overrides, launcher flags),
  then the run's workdir and overrides."""
  return [
    sys.executable,
    "-m",
    "experiments.train",
    *train_args,
    f"--workdir={os.path.abspath(run.directory)}",
    *(f"--config.{k}={_cli_value(v)}" for k, v in run.overrides.items()),
  ]


def _check_config_unchanged(run: Run) -> None:
  """Refuses a run directory trained with another config than this invocation's:
  reused, it would be measured and recorded as this config's run. Fields that do
  not change what was trained (`config_changes.SAFE`: evaluation, logging, paths)
  may differ; fields added since it was saved take their defaults."""
  saved = config_changes.load_saved(run.directory)
  if saved is None:
    return
  changed = [
    k
    for k in config_changes.diff(config_changes.flat(saved), config_changes.flat(run.config))
    if not config_changes.is_safe(k)
  ]
  if changed:
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    raise ValueError(
      f"run {run.directory} was trained with another config ({shown}): use a new "
      "--workdir, or remove that run directory to train it again"
    )


def train_runs(
  runs: Sequence[Run],
  *,
  max_parallel: int = 0,
  mesh=None,
  train_args: Sequence[str] = (),
  env: dict[str, str] | None = None,
  cwd: str | None = None,
  poll_s: float = 0.5,
) -> dict[str, str]:
  """Trains the unfinished runs; returns {run name: 'reused' | 'trained'}.

  Args:
    runs: from `make_run`.
    max_parallel: 0 trains in this process, one run after the other, on `mesh`
      (default: every device); N > 0 runs `experiments.train` subprocesses
      (`train_command(run, train_args)`, output in `<run>/train.log`), N at a time.
    mesh: the data mesh of in-process training.
    train_args, env, cwd: of the subprocesses.
    poll_s: how often finished subprocesses are collected.

  Raises:
    RuntimeError: naming every failed subprocess run and its log's tail.
    SystemExit: after SIGTERM (e.g. `timeout`): the runs checkpointed and
      stopped; the same command resumes them.
  """
  status, todo = {}, []
  for run in runs:
    _check_config_unchanged(run)
    if is_finished(run):
      print(f"reusing finished run {run.name} (step {run.total})", flush=True)
      status[run.name] = "reused"
    else:
      todo.append(run)
  if max_parallel <= 0:
    for run in todo:
      print(f"training {run.name} in this process", flush=True)
      result = train.train_and_evaluate(run.config, run.directory, mesh=mesh)
      if "stopped_at" in result:
        raise SystemExit(
          f"SIGTERM: {run.name} stopped at step {result['stopped_at']}; rerun to resume"
        )
      status[run.name] = "trained"
    return status
  return {**status, **_train_subprocesses(todo, max_parallel, train_args, env, cwd, poll_s)}


def _train_subprocesses(todo, max_parallel, train_args, env, cwd, poll_s) -> dict[str, str]:
  status = {}
  env = dict(os.environ if env is None else env)
  if max_parallel > 1 and jax.default_backend() != "cpu":
    # The children share the accelerator.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / max_parallel:.2f}")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  running: list[tuple[Run, subprocess.Popen, Any]] = []
  failed = []
  stop = {"term": False}
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))
  try:
    while todo or running:
      if stop["term"]:
        _stop_subprocesses(running, todo)
      while todo and len(running) < max_parallel:
        running.append(_start_subprocess(todo.pop(0), train_args, env, cwd))
      time.sleep(poll_s)
      still = []
      for run, proc, log in running:
        rc = proc.poll()
        if rc is None:
          still.append((run, proc, log))
          continue
        log.close()
        if rc == 0 and is_finished(run):
          logging.info("run %s finished", run.name)
          status[run.name] = "trained"
        else:
          failed.append((run, rc))
      running = still
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
  if failed:
    raise RuntimeError("\n\n".join(_failure(run, rc) for run, rc in failed))
  return status


def _start_subprocess(run: Run, train_args, env, cwd) -> tuple[Run, subprocess.Popen, Any]:
  """Starts `experiments.train` for `run`, its output appended to `<run>/train.log`:
  (run, process, the open log)."""
  os.makedirs(run.directory, exist_ok=True)
  cmd = train_command(run, train_args)
  log = open(os.path.join(run.directory, "train.log"), "a")  # noqa: SIM115
  log.write(f"\n$ {' '.join(cmd)}\n")
  log.flush()
  have = checkpoint_steps(run.directory)
  print(
    f"training {run.name} ({f'resuming from step {have[-1]}' if have else 'from scratch'}; "
    f"log: {log.name})",
    flush=True,
  )
  proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
  return run, proc, log


def _stop_subprocesses(running, todo) -> None:
  """After SIGTERM: terminates the running subprocesses, waits for them (they
  checkpoint) and raises SystemExit naming them and the runs not started."""
  # experiments.train saves a checkpoint on SIGTERM: the next invocation resumes.
  for _, proc, _ in running:
    proc.terminate()
  for _, proc, log in running:
    proc.wait()
    log.close()
  raise SystemExit(
    f"SIGTERM: stopped {[r.name for r, _, _ in running]} (checkpointed) and did not "
    f"start {[r.name for r in todo]}; rerun the same command to resume"
  )


def _failure(run: Run, rc) -> str:
  """A failed run's exit status and the tail of its log."""
  with open(os.path.join(run.directory, "train.log")) as f:
    tail = "".join(f.readlines()[-15:])
  return f"run {run.name} failed (exit {rc}); log {run.directory}/train.log ends:\n{tail}"


def train_args(argv: Sequence[str], config_filename: str, compilation_cache_dir: str) -> list[str]:
  """`experiments.train` arguments shared by a launcher's runs: the config file
  (absolute: the children run in the repository), the `--config.*` overrides of
  `argv`, and the compilation cache (runs that share a train step compile it once)."""
  overrides = [a for a in argv if re.match(r"^--?config\.", a)]
  bad = [a for a in overrides if "=" not in a]
  if bad:
    raise ValueError(f"write config overrides as --config.key=value: {bad}")
  head, _, tail = config_filename.partition(":")
  config_arg = (os.path.abspath(head) if os.path.exists(head) else head) + (
    f":{tail}" if tail else ""
  )
  cache = os.path.abspath(compilation_cache_dir) if compilation_cache_dir else ""
  return [f"--config={config_arg}", *overrides, f"--compilation_cache_dir={cache}"]
