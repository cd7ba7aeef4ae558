"""The paper's experiments (§5): trains the runs they need, evaluates, and writes
each experiment's figures and table.

  python -m experiments.paper --experiment=all --config=heatpose_jax/configs/synthetic.py \
      --workdir=runs/paper [--seeds=3] [--max_parallel=2] [--config.data_dir=...]

The experiments (`EXPERIMENTS`, run in that order by `--experiment=all`):

  pooling          Fig. 9 + Table 1: the coarse model at 4/8/16x pooling: all-joint
                   PCK curves and the σ of the x error beside the label noise.
  cascade          Fig. 11 + 12: coarse vs cascade at each pooling: x-error
                   histograms (head, shoulders) and head / wrist PCK curves.
  shared_features  Fig. 13 / 14a: shared-feature cascade vs the standard cascade
                   (parameter counts, wrist PCK).
  spatial_dropout  Fig. 14b: spatial vs standard vs no dropout: wrist PCK, train
                   and validation E1 curves.
  timing           Table 2: forward ms per image of the coarse and fine models.
  mpii_table       Table 4 + Fig. 16: scale-normalized vs unnormalized training,
                   each scored on normalized and unnormalized test crops.

Runs (`RUNS`) are the base config plus overrides, trained by
`python -m experiments.train` subprocesses into `workdir/runs/<name>[_seed<k>]/`
(`max_parallel` at a time). A run whose final checkpoint exists and whose final
evaluation was written is reused; an unfinished one resumes. Every checkpoint of
a run is kept (its `checkpoint_every` is raised so that there are about
`checkpoints_per_run` of them): the coarse model is the phase-1 checkpoint
(step = coarse_steps) and the validation-loss curves read every checkpoint.

Evaluation happens in this process (predictions cached as `.npz` beside each
run's checkpoints), with dropout off, on `config.eval_split`, in the canvas
frame (input pixels), argmax decoding as configured (`config.eval.coarse_refine`).
Outputs: `workdir/<experiment>/{table.md, table.json, *.png}` and
`workdir/summary.md`. Only `run_experiments` reads the command line's config.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import benchmark, codec, evaluation, input_pipeline, metrics, model_stats, train
from heatpose_jax import joints as joints_lib

EXPERIMENTS = ("pooling", "cascade", "shared_features", "spatial_dropout", "timing", "mpii_table")
POOLS = (4, 8, 16)
# The shared-features and dropout comparisons run at this pooling (the paper used
# 4x for Fig. 14a; 8x is our main model, see BUILD_NOTES.md).
MAIN_POOL = 8
TIMING_BATCH_SIZES = (1, 32)  # the default of `run_experiments(timing_batch_sizes=...)`
HIST_RANGE_PX = 20.0  # the paper's outlier bound: histograms and σ use |e| <= 20


def table_pool(base: ml_collections.ConfigDict) -> int:
  """The pooling of the mpii_table models: the base config's, if one of `POOLS`."""
  p = int(base.model.pool_factor)
  return p if p in POOLS else MAIN_POOL


def runs_of(experiment: str, base: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The runs an experiment needs (run names, see `run_overrides`)."""
  if experiment not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {experiment!r}; known: {EXPERIMENTS} or 'all'")
  main = f"pool{MAIN_POOL}"
  return {
    "pooling": tuple(f"pool{p}" for p in POOLS),
    "cascade": tuple(f"pool{p}" for p in POOLS),
    "shared_features": (main, f"standard{MAIN_POOL}"),
    "spatial_dropout": (main, f"stddropout{MAIN_POOL}", f"nodropout{MAIN_POOL}"),
    "timing": (),
    "mpii_table": (f"pool{table_pool(base)}", "unnormalized"),
  }[experiment]


def run_overrides(
  base: ml_collections.ConfigDict, name: str, *, unnormalized_scale: float = 0.0
) -> dict[str, Any]:
  """Config overrides (dotted keys) that turn `base` into run `name`.

  Args:
    base: the experiment's base config.
    name: 'pool4' | 'pool8' | 'pool16' | 'standard8' | 'nodropout8' |
      'stddropout8' | 'unnormalized'.
    unnormalized_scale: canvas px per image px of the 'unnormalized' crop (0: the
      crop mode's default, 1/3, as MPII's `unnormalized` config argument).
  """
  m = MAIN_POOL
  if name in {f"pool{p}" for p in POOLS}:
    return {"model.pool_factor": int(name[4:])}
  if name == f"standard{m}":
    # Fig. 13's comparison, greedy as `configs.common.finish(standard=True)`.
    return {
      "model.pool_factor": m,
      "model.standard_cascade": True,
      "fine_steps": int(base.fine_steps) + int(base.joint_steps),
      "joint_steps": 0,
    }
  if name == f"nodropout{m}":
    return {"model.pool_factor": m, "model.dropout": "none"}
  if name == f"stddropout{m}":
    return {"model.pool_factor": m, "model.dropout": "standard"}
  if name == "unnormalized":
    out = {"model.pool_factor": table_pool(base), "crop_mode": "unnormalized"}
    if unnormalized_scale:
      out["image_scale"] = float(unnormalized_scale)
    return out
  raise ValueError(f"unknown run {name!r}")


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-key overrides set."""
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
      node = node[p]
    node[leaf] = value
  return out


def total_steps(config: ml_collections.ConfigDict) -> int:
  return int(config.coarse_steps) + int(config.fine_steps) + int(config.joint_steps)


def checkpoint_overrides(config: ml_collections.ConfigDict, per_run: int) -> dict[str, int]:
  """`checkpoint_every` (about `per_run` checkpoints) and a `keep_checkpoints` that keeps all."""
  total = total_steps(config)
  every = max(int(config.checkpoint_every), math.ceil(total / max(1, per_run)))
  return {"checkpoint_every": every, "keep_checkpoints": total // every + len(train.PHASES) + 2}


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
  ex = train.data_source(base, base.train_split)[0]
  return float(min(base.input_hw) / max(np.asarray(ex["image_hw"]).tolist()))


def _cli_value(v: Any) -> str:
  if isinstance(v, bool | int | float | str):
    return str(v)
  return repr(tuple(v))


@dataclasses.dataclass
class Run:
  """One training run: its directory, config and `experiments.train` overrides."""

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
) -> Run:
  """The run `kind` of seed `base.seed + seed_index` under `workdir/runs/`."""
  o = run_overrides(base, kind, unnormalized_scale=unnormalized_scale)
  if seed_index:
    o["seed"] = int(base.seed) + seed_index
  cfg = apply_overrides(base, o)
  o.update(checkpoint_overrides(cfg, checkpoints_per_run))
  name = kind + (f"_seed{seed_index}" if seed_index else "")
  return Run(kind, seed_index, os.path.join(workdir, "runs", name), o, apply_overrides(base, o))


def checkpoint_steps(run_dir: str) -> list[int]:
  """The finished checkpoint steps in `run_dir/checkpoints` (orbax renames a
  checkpoint to its bare step number only once it is complete)."""
  d = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def is_finished(run: Run) -> bool:
  """The final checkpoint and the final evaluation exist."""
  return run.total in checkpoint_steps(run.directory) and os.path.exists(
    os.path.join(run.directory, "eval", f"{run.total}.json")
  )


def train_command(run: Run, *, config_arg: str, config_overrides: Sequence[str]) -> list[str]:
  """The `experiments.train` command line of a run: the base config string, the
  command line's own `--config.*` overrides, then the run's."""
  return [
    sys.executable,
    "-m",
    "experiments.train",
    f"--config={config_arg}",
    f"--workdir={os.path.abspath(run.directory)}",
    *config_overrides,
    *(f"--config.{k}={_cli_value(v)}" for k, v in run.overrides.items()),
  ]


def _check_config_unchanged(run: Run) -> None:
  path = os.path.join(run.directory, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  new = json.loads(run.config.to_json_best_effort())
  ignore = {"data_dir", "worker_count", "canvas_cache"}
  diff = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
  if diff:
    logging.warning(
      "run %s: its config.json differs from this invocation in %s; what is there is "
      "reused or resumed (use a new --workdir for a clean comparison)",
      run.directory,
      diff,
    )


def train_runs(
  runs: Sequence[Run],
  *,
  config_arg: str,
  config_overrides: Sequence[str],
  max_parallel: int,
  env: dict[str, str],
  cwd: str,
  poll_s: float = 0.5,
) -> dict[str, str]:
  """Trains the unfinished runs as subprocesses, `max_parallel` at a time.

  Each child's output goes to `<run>/train.log`. Returns {run name: 'reused' |
  'trained'}; raises RuntimeError naming every failed run and its log's tail.
  SIGTERM (e.g. `timeout`) is passed on to the children, which checkpoint and
  stop; then SystemExit: the same command resumes them.
  """
  status, todo = {}, []
  for run in runs:
    _check_config_unchanged(run)
    if is_finished(run):
      logging.info("reusing finished run %s (step %d)", run.directory, run.total)
      status[run.name] = "reused"
    else:
      todo.append(run)
  running: list[tuple[Run, subprocess.Popen, Any]] = []
  failed = []
  stop = {"term": False}
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))
  try:
    while todo or running:
      if stop["term"]:
        # train.py saves a checkpoint on SIGTERM: the next invocation resumes.
        for _, proc, _ in running:
          proc.terminate()
        for _, proc, log in running:
          proc.wait()
          log.close()
        raise SystemExit(
          f"SIGTERM: stopped {[r.name for r, _, _ in running]} (checkpointed) and did not "
          f"start {[r.name for r in todo]}; rerun the same command to resume"
        )
      while todo and len(running) < max(1, max_parallel):
        run = todo.pop(0)
        os.makedirs(run.directory, exist_ok=True)
        cmd = train_command(run, config_arg=config_arg, config_overrides=config_overrides)
        log = open(os.path.join(run.directory, "train.log"), "a")  # noqa: SIM115
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        have = checkpoint_steps(run.directory)
        logging.info(
          "training %s (%s; log: %s)",
          run.name,
          f"resuming from step {have[-1]}" if have else "from scratch",
          log.name,
        )
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        running.append((run, proc, log))
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
    msgs = []
    for run, rc in failed:
      with open(os.path.join(run.directory, "train.log")) as f:
        tail = "".join(f.readlines()[-15:])
      msgs.append(f"run {run.name} failed (exit {rc}); log {run.directory}/train.log ends:\n{tail}")
    raise RuntimeError("\n\n".join(msgs))
  return status


# --- evaluation ------------------------------------------------------------------


def eval_model(config: ml_collections.ConfigDict):
  """The run's model for inference (dropout off: no parameters change)."""
  return train.build_model(apply_overrides(config, {"model.dropout": "none"}))


def abstract_state(config: ml_collections.ConfigDict, mesh: Mesh) -> train.TrainState:
  """Shapes, dtypes and (replicated) shardings of a run's checkpointed state."""
  model = train.build_model(config)
  optimizer, _ = train.make_optimizer(config, train.phase_bounds(config))
  h, w = config.input_hw

  def init():
    x = jnp.zeros((1, h, w, 3), jnp.float32)
    params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]
    return train.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), jax.eval_shape(init)
  )


def restore_params(config: ml_collections.ConfigDict, run_dir: str, step: int, mesh: Mesh):
  """The parameters of checkpoint `step` of `run_dir` (nothing is compiled)."""
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "checkpoints")))
  try:
    state = mngr.restore(step, args=ocp.args.StandardRestore(abstract_state(config, mesh)))
  finally:
    mngr.close()
  return state.params


def make_eval_fn(model, mesh: Mesh, *, sigma_coarse: float, coarse_refine: bool):
  """A jitted `(params, batch) -> dict`: `evaluation.make_predict_fn`'s outputs
  (`coarse`, `cascade`, the batch fields) plus the coarse loss E1 per example
  (`e1_sum` over its valid joints, `e1_count`), against the un-augmented batch."""
  stride = model.coarse.stride

  def fn(params, batch):
    images = batch["image"].astype(jnp.float32) / 255.0
    out = model.apply({"params": params}, images, train=False)
    heat = out["coarse_heatmaps"]
    coarse, _ = codec.decode_coarse(heat, stride, refine=coarse_refine)
    valid = batch["joints_valid"] * batch["_mask"][:, None].astype(jnp.float32)
    target = codec.coarse_targets(batch["joints"], valid, heat.shape[1:3], stride, sigma_coarse)
    err = jnp.sum(jnp.square(heat - target), axis=(1, 2))  # (B, J), as losses.coarse_loss
    result = {k: v for k, v in batch.items() if k != "image"}
    result.update(
      coarse=coarse,
      cascade=out["xy"],
      e1_sum=jnp.sum(err * valid, axis=-1),
      e1_count=jnp.sum(valid, axis=-1),
    )
    return result

  return jax.jit(fn, out_shardings=NamedSharding(mesh, PartitionSpec()))


class Evaluator:
  """Evaluates checkpoints of runs, caching predictions on disk and jitted
  functions per model architecture."""

  def __init__(self, mesh: Mesh):
    self.mesh = mesh
    self._fns: dict[str, Callable] = {}
    self._preds: dict[str, dict[str, np.ndarray]] = {}

  def _fn(self, config):
    key = json.dumps(
      [apply_overrides(config, {"model.dropout": "none"}).model.to_dict(), config.dtype],
      sort_keys=True,
      default=str,
    )
    if key not in self._fns:
      self._fns[key] = make_eval_fn(
        eval_model(config),
        self.mesh,
        sigma_coarse=config.model.sigma_coarse,
        coarse_refine=config.eval.coarse_refine,
      )
    return self._fns[key]

  def predictions(
    self,
    run: Run,
    step: int | None = None,
    *,
    crop_mode: str | None = None,
    image_scale: float | None = None,
  ) -> dict[str, np.ndarray]:
    """Predictions of `run`'s checkpoint `step` (default: the final one) on the
    eval split, optionally cropped with another crop mode / image scale.

    Returns `evaluation.predict_dataset`-style arrays (canvas frame) plus
    `e1_sum`, `e1_count` per example.
    """
    step = run.total if step is None else step
    cfg = apply_overrides(run.config, {"canvas_cache": False})
    if crop_mode is not None:
      cfg = apply_overrides(cfg, {"crop_mode": crop_mode, "image_scale": image_scale or 0.0})
    key_fields = [
      cfg.eval_split,
      cfg.crop_mode,
      cfg.image_scale,
      cfg.box_scale,
      list(cfg.input_hw),
      cfg.max_eval_examples,
      cfg.eval.coarse_refine,
    ]
    digest = hashlib.sha1(json.dumps(key_fields).encode()).hexdigest()[:10]
    path = os.path.join(run.directory, "paper_eval", f"step{step}_{cfg.crop_mode}_{digest}.npz")
    if path in self._preds:
      return self._preds[path]
    if os.path.exists(path):
      with np.load(path) as z:
        preds = {k: z[k] for k in z.files}
    else:
      if step not in checkpoint_steps(run.directory):
        raise FileNotFoundError(f"run {run.directory} has no checkpoint at step {step}")
      params = restore_params(run.config, run.directory, step, self.mesh)
      source = train.eval_source(cfg, run.directory)
      preds = evaluation.predict_dataset(
        self._fn(cfg), params, train.eval_batches(cfg, source), self.mesh
      )
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **preds)
        os.replace(tmp, path)
    self._preds[path] = preds
    return preds


# --- metrics of predictions --------------------------------------------------------


def pck_columns(
  preds: dict[str, np.ndarray],
  key: str,
  skeleton: joints_lib.Skeleton,
  normalizer: str,
  alphas: Sequence[float],
) -> dict[str, np.ndarray]:
  """PCK (%) over `alphas` of the table's columns and "All" (pooled over the scored joints).

  Args:
    preds: `Evaluator.predictions` output.
    key: 'coarse' or 'cascade'.
    skeleton: the dataset's joints.
    normalizer: 'head_size' (PCKh) or 'torso_size'.
    alphas: thresholds.

  Returns:
    column -> `(len(alphas),)` percentages.
  """
  rates, counts = metrics.pck_curve(
    preds[key], preds["joints"], preds["joints_valid"] > 0, preds[normalizer], np.asarray(alphas)
  )
  out = {
    k: np.asarray(v, np.float64) for k, v in metrics.table(rates, counts, skeleton, False).items()
  }
  idx = np.flatnonzero(skeleton.scored_mask)
  c = counts[idx].astype(np.float64)
  out["All"] = (np.where(c > 0, rates[:, idx], 0.0) * c).sum(-1) / max(c.sum(), 1.0)
  return out


def x_errors(preds: dict[str, np.ndarray], key: str, joint_idx: Sequence[int]) -> np.ndarray:
  """x_pred − x_gt (input px) of the valid (example, joint) pairs of `joint_idx`."""
  idx = np.asarray(joint_idx)
  err = preds[key][:, idx, 0] - preds["joints"][:, idx, 0]
  return err[preds["joints_valid"][:, idx] > 0]


def sigma_x(preds: dict[str, np.ndarray], key: str, joint_idx: Sequence[int]) -> tuple[float, int]:
  """`metrics.x_error_sigma` pooled over `joint_idx` (|e| ≤ 20 px kept)."""
  idx = np.asarray(joint_idx)
  return metrics.x_error_sigma(
    preds[key][:, idx], preds["joints"][:, idx], preds["joints_valid"][:, idx] > 0, HIST_RANGE_PX
  )


def label_noise_sigma(
  source,
  skeleton: joints_lib.Skeleton,
  columns: dict[str, np.ndarray],
  *,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  image_scale: float | None,
  box_scale: float | None,
) -> dict[str, float] | None:
  """The σ of the injected label noise in x per table column, input (canvas) px.

  Measured on the dataset's `joints − joints_clean` (synthetic people store
  both) times each example's canvas scale; None when the dataset has no clean
  joints (FLIC, MPII: "n/a").
  """
  if len(source) == 0 or "joints_clean" not in source[0]:
    return None
  errs = {c: [] for c in columns}
  mi = skeleton.model_indices
  for i in range(len(source)):
    ex = source[i]
    m = input_pipeline.crop_transform(
      ex, crop_mode=crop_mode, canvas_hw=canvas_hw, image_scale=image_scale, box_scale=box_scale
    )
    d = (np.asarray(ex["joints"])[mi, 0] - np.asarray(ex["joints_clean"])[mi, 0]) / m[0, 0]
    valid = np.asarray(ex["joints_valid"], bool)[mi]
    for c, idx in columns.items():
      errs[c].append(d[idx][valid[idx]])
  return {c: float(np.std(np.concatenate(v))) if v else float("nan") for c, v in errs.items()}


def read_scalars(
  tensorboard_dir: str, tags: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Scalars of TensorBoard event files without TensorFlow.

  Parses the TFRecord framing (u64 length, u32 crc, payload, u32 crc) with
  tensorboardX's `Event` protobuf. A step logged twice (a resumed run) keeps the
  newest file's value.

  Returns:
    tag -> (steps, values), sorted by step (empty arrays for an absent tag).
  """
  from tensorboardX.proto import event_pb2

  found: dict[str, dict[int, float]] = {t: {} for t in tags}
  files = sorted(
    glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*")), key=os.path.getmtime
  )
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    i = 0
    while i + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      payload = data[i + 12 : i + 12 + n]
      i += 12 + n + 4
      if len(payload) < n:
        break  # a record still being written
      event = event_pb2.Event.FromString(payload)
      for v in event.summary.value:
        if v.tag in found and v.WhichOneof("value") == "simple_value":
          found[v.tag][int(event.step)] = float(v.simple_value)
  out = {}
  for t, d in found.items():
    steps = np.array(sorted(d), np.int64)
    out[t] = (steps, np.array([d[s] for s in steps], np.float64))
  return out


# --- tables ----------------------------------------------------------------------


@dataclasses.dataclass
class Table:
  """An experiment's table: per-seed values of each (row, column)."""

  title: str
  columns: list[str]
  rows: dict[str, dict[str, list[float] | None]] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  figures: list[str] = dataclasses.field(default_factory=list)

  def add(self, row: str, column: str, value: float | None) -> None:
    """Appends one seed's value (None: not applicable)."""
    if column not in self.columns:
      raise KeyError(f"{self.title}: no column {column!r}")
    cells = self.rows.setdefault(row, {})
    if value is None:
      cells.setdefault(column, None)
    else:
      cells.setdefault(column, [])
      cells[column].append(float(value))

  def stats(self, row: str, column: str) -> tuple[float, float, list[float]] | None:
    v = self.rows[row].get(column)
    if not v:
      return None
    return float(np.mean(v)), float(np.std(v)), list(v)

  def to_json(self, header: dict) -> dict:
    rows = []
    for r in self.rows:
      values, std, per_seed = {}, {}, {}
      for c in self.columns:
        s = self.stats(r, c)
        values[c] = None if s is None else s[0]
        std[c] = None if s is None else s[1]
        per_seed[c] = None if s is None else s[2]
      rows.append({"name": r, "values": values, "std": std, "per_seed": per_seed})
    return {
      "title": self.title,
      "header": header,
      "columns": self.columns,
      "rows": rows,
      "notes": self.notes,
      "figures": self.figures,
    }

  def to_markdown(self, header: dict, fmt: str = ".1f") -> str:
    lines = [f"## {self.title}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| | " + " | ".join(self.columns) + " |", "|---" * (len(self.columns) + 1) + "|"]
    for r in self.rows:
      cells = []
      for c in self.columns:
        s = self.stats(r, c)
        if s is None:
          cells.append("n/a")
        elif len(s[2]) > 1:
          cells.append(f"{s[0]:{_fmt(c, fmt)}} ± {s[1]:{_fmt(c, fmt)}}")
        else:
          cells.append(f"{s[0]:{_fmt(c, fmt)}}")
      lines.append(f"| {r} | " + " | ".join(cells) + " |")
    if self.notes:
      lines += [""] + [f"- {n}" for n in self.notes]
    if self.figures:
      lines += [""] + [f"![{f}]({f})" for f in self.figures]
    return "\n".join(lines) + "\n"


def _fmt(column: str, default: str) -> str:
  if column.startswith(("params", "removed")):
    return ",.0f"
  if column.startswith(("σ", "train E1", "val E1")):
    return ".3g"
  if "ms" in column:
    return ".3g"
  return default


# --- the experiments -------------------------------------------------------------


@dataclasses.dataclass
class Context:
  """What every experiment reads: the base config, its runs and the evaluator."""

  base: ml_collections.ConfigDict
  workdir: str
  seeds: int
  runs: dict[tuple[str, int], Run]
  evaluator: Evaluator
  header: dict[str, str]
  timing_iters: int = 50
  timing_batch_sizes: tuple[int, ...] = TIMING_BATCH_SIZES

  @property
  def skeleton(self) -> joints_lib.Skeleton:
    return joints_lib.get_skeleton(self.base.dataset)

  @property
  def alphas(self) -> np.ndarray:
    return np.linspace(0.0, float(self.base.eval.curve_max), 21)

  @property
  def thresholds(self) -> tuple[float, ...]:
    """The smallest and the largest table threshold (one if they are equal)."""
    t = sorted(float(x) for x in self.base.eval.thresholds)
    return tuple(dict.fromkeys((t[0], t[-1])))

  def run(self, kind: str, seed_index: int) -> Run:
    return self.runs[(kind, seed_index)]

  def preds(self, kind: str, seed_index: int, step: int | None = None, **kw):
    return self.evaluator.predictions(self.run(kind, seed_index), step, **kw)

  def pck(self, preds, key: str, alphas=None) -> dict[str, np.ndarray]:
    a = self.alphas if alphas is None else alphas
    return pck_columns(preds, key, self.skeleton, self.base.eval.normalizer, a)


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, out_dir: str, name: str, table: Table) -> None:
  path = os.path.join(out_dir, name)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)
  _plt().close(fig)
  table.figures.append(name)


def _plot_mean(ax, x, curves: list[np.ndarray], style: str, label: str, color=None) -> None:
  """Mean over seeds, with a ±std band when there are several."""
  y = np.mean(curves, axis=0)
  (line,) = ax.plot(x, y, style, label=label, color=color)
  if len(curves) > 1:
    s = np.std(curves, axis=0)
    ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)


def _pck_axes(ax, title: str, normalizer: str) -> None:
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("normalized distance" + (" (PCKh)" if normalizer == "head_size" else " (PCK)"))
  ax.set_ylabel("detection rate, %")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def pooling(ctx: Context, out_dir: str) -> Table:
  """Fig. 9 and Table 1: the coarse model at 4/8/16x pooling."""
  skel, base = ctx.skeleton, ctx.base
  cols = skel.table_indices()
  ta = ctx.thresholds
  columns = [f"σ {c}" for c in cols] + ["removed"] + [f"PCK@{a} All" for a in ta]
  t = Table("pooling: coarse-model precision vs pooling (paper Fig. 9, Table 1)", columns)
  src = train.eval_source(apply_overrides(base, {"canvas_cache": False}), ctx.workdir)
  noise = label_noise_sigma(
    src,
    skel,
    cols,
    crop_mode=base.crop_mode,
    canvas_hw=tuple(base.input_hw),
    image_scale=base.image_scale or None,
    box_scale=base.box_scale or None,
  )
  for c in cols:
    t.add("label noise (dataset)", f"σ {c}", None if noise is None else noise[c])
  for c in ["removed"] + [f"PCK@{a} All" for a in ta]:
    t.add("label noise (dataset)", c, None)
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  for p in POOLS:
    curves = {"phase 1": [], "final": []}
    for s in range(ctx.seeds):
      run = ctx.run(f"pool{p}", s)
      steps = {"phase 1": int(run.config.coarse_steps), "final": None}
      for label, step in steps.items():
        row = f"{p}x coarse ({'phase 1, step ' + str(step) if step else 'of the final model'})"
        preds = ctx.preds(f"pool{p}", s, step)
        removed = 0
        for c, idx in cols.items():
          sig, r = sigma_x(preds, "coarse", idx)
          t.add(row, f"σ {c}", sig)
          removed += r
        t.add(row, "removed", removed)
        pck = ctx.pck(preds, "coarse", ta)["All"]
        for a, v in zip(ta, pck, strict=True):
          t.add(row, f"PCK@{a} All", v)
        curves[label].append(ctx.pck(preds, "coarse")["All"])
    _plot_mean(ax, ctx.alphas, curves["phase 1"], "-", f"{p}x pool")
    _plot_mean(ax, ctx.alphas, curves["final"], ":", f"{p}x pool, after joint training")
  _pck_axes(ax, "coarse heat-map model, all joints (Fig. 9)", base.eval.normalizer)
  fig.tight_layout()
  _save(fig, out_dir, "pck_all_joints.png", t)
  t.notes += [
    "σ: standard deviation of the x error (input px) pooled over the column's joints, "
    f"errors beyond ±{HIST_RANGE_PX:g} px removed (their total count: 'removed').",
    "label noise: σ of (joints − joints_clean) in x, input px, measured on the eval split "
    "(synthetic people); n/a where the dataset has no clean labels (FLIC, MPII).",
    "phase 1 = the checkpoint at step coarse_steps (the coarse model trained alone); "
    "'of the final model' = the coarse estimate after the joint phase.",
  ]
  return t


def cascade(ctx: Context, out_dir: str) -> Table:
  """Fig. 11 and 12: coarse vs cascade at each pooling."""
  skel = ctx.skeleton
  cols = skel.table_indices()
  groups = {"Head": cols["Head"], "Shoulder": cols["Shoulder"]}
  ta = ctx.thresholds
  columns = [f"{k} {g}" for g in groups for k in ("σ", "removed")]
  columns += [f"PCK@{a} {c}" for a in ta for c in ("Head", "Wrist")]
  t = Table("cascade: coarse vs cascade (paper Fig. 11, Fig. 12)", columns)
  plt = _plt()
  hist_fig, hist_axes = plt.subplots(len(POOLS), 4, figsize=(13, 2.6 * len(POOLS)), squeeze=False)
  curve_fig, curve_axes = plt.subplots(1, 2, figsize=(10, 4))
  bins = np.arange(-HIST_RANGE_PX, HIST_RANGE_PX + 1.0, 1.0)
  colors = dict(zip(POOLS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
  for i, p in enumerate(POOLS):
    errs = {(g, m): [] for g in groups for m in ("coarse", "cascade")}
    curves = {(c, m): [] for c in ("Head", "Wrist") for m in ("coarse", "cascade")}
    for s in range(ctx.seeds):
      run = ctx.run(f"pool{p}", s)
      estimates = {
        "coarse": (ctx.preds(f"pool{p}", s, int(run.config.coarse_steps)), "coarse"),
        "cascade": (ctx.preds(f"pool{p}", s), "cascade"),
      }
      for m, (preds, key) in estimates.items():
        row = f"{p}x {'coarse (phase 1)' if m == 'coarse' else 'cascade'}"
        for g, idx in groups.items():
          sig, r = sigma_x(preds, key, idx)
          t.add(row, f"σ {g}", sig)
          t.add(row, f"removed {g}", r)
          errs[(g, m)].append(x_errors(preds, key, idx))
        at = ctx.pck(preds, key, ta)
        for c in ("Head", "Wrist"):
          for a, v in zip(ta, at[c], strict=True):
            t.add(row, f"PCK@{a} {c}", v)
        full = ctx.pck(preds, key)
        for c in ("Head", "Wrist"):
          curves[(c, m)].append(full[c])
    for j, (g, m) in enumerate((g, m) for g in groups for m in ("coarse", "cascade")):
      ax = hist_axes[i][j]
      e = np.concatenate(errs[(g, m)])
      kept = e[np.abs(e) <= HIST_RANGE_PX]
      ax.hist(kept, bins=bins, density=True, color=colors[p], alpha=0.8)
      std = float(np.std(kept)) if kept.size else float("nan")
      ax.set_title(f"{p}x {m}, {g}: STD {std:.2f} ({e.size - kept.size} out)", fontsize=8)
      ax.set_xlabel("prediction error (x), input px", fontsize=8)
      ax.set_ylabel("probability", fontsize=8)
    for k, c in enumerate(("Head", "Wrist")):
      _plot_mean(curve_axes[k], ctx.alphas, curves[(c, "coarse")], "--", f"{p}x coarse", colors[p])
      _plot_mean(curve_axes[k], ctx.alphas, curves[(c, "cascade")], "-", f"{p}x cascade", colors[p])
  for k, c in enumerate(("Head", "Wrist")):
    _pck_axes(curve_axes[k], f"{c}: coarse (dashed) vs cascade (solid)", ctx.base.eval.normalizer)
  hist_fig.suptitle("x error: coarse model (phase 1) vs cascade (Fig. 11)", fontsize=10)
  hist_fig.tight_layout()
  curve_fig.tight_layout()
  _save(hist_fig, out_dir, "x_error_histograms.png", t)
  _save(curve_fig, out_dir, "pck_head_wrist.png", t)
  head = ", ".join(skel.model_joints[j] for j in cols["Head"])
  t.notes += [
    f"Head = {head}; Shoulder = both shoulders; σ in input px with |e| ≤ {HIST_RANGE_PX:g} kept.",
    "coarse = argmax of the phase-1 checkpoint (coarse model alone); cascade = final model.",
  ]
  return t


def _add_wrist_all(t: Table, row: str, at: dict[str, np.ndarray], alphas: Sequence[float]) -> None:
  for a, v in zip(alphas, at["Wrist"], strict=True):
    t.add(row, f"PCK@{a} Wrist", v)
  t.add(row, f"PCK@{alphas[-1]} All", at["All"][-1])


def shared_features(ctx: Context, out_dir: str) -> Table:
  """Fig. 13 / 14a: shared-feature cascade vs the standard (image-patch) cascade."""
  ta = ctx.thresholds
  columns = ["params coarse", "params fine", "params total"]
  columns += [f"PCK@{a} Wrist" for a in ta] + [f"PCK@{ta[-1]} All"]
  t = Table(
    f"shared_features: shared features vs standard cascade at {MAIN_POOL}x (paper Fig. 13, 14a)",
    columns,
  )
  kinds = {
    f"pool{MAIN_POOL}": "shared features (joint training)",
    f"standard{MAIN_POOL}": "standard cascade (greedy)",
  }
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  for kind, label in kinds.items():
    curves = {"cascade": [], "coarse": []}
    for s in range(ctx.seeds):
      run = ctx.run(kind, s)
      shapes = abstract_state(run.config, ctx.evaluator.mesh).params
      nc, nf = model_stats.count_params(shapes["coarse"]), model_stats.count_params(shapes["fine"])
      t.add(label, "params coarse", nc)
      t.add(label, "params fine", nf)
      t.add(label, "params total", nc + nf)
      preds = ctx.preds(kind, s)
      _add_wrist_all(t, label, ctx.pck(preds, "cascade", ta), ta)
      for m in curves:
        curves[m].append(ctx.pck(preds, m)["Wrist"])
    _plot_mean(ax, ctx.alphas, curves["cascade"], "-", label)
    _plot_mean(ax, ctx.alphas, curves["coarse"], ":", f"{label}, coarse only")
  _pck_axes(ax, f"wrist, {MAIN_POOL}x pooling (Fig. 14a)", ctx.base.eval.normalizer)
  fig.tight_layout()
  _save(fig, out_dir, "pck_wrist.png", t)
  t.notes += [
    "The standard cascade's fine model crops the LCN image pyramid and has an extra conv "
    "sized so that its parameter count matches (models.matched_standard_features).",
    f"The paper compares at 4x pooling; we use {MAIN_POOL}x, the pooling of the other comparisons.",
  ]
  return t


def spatial_dropout(ctx: Context, out_dir: str) -> Table:
  """Fig. 14b: SpatialDropout vs standard dropout vs none; wrist PCK and E1 curves."""
  ta = ctx.thresholds
  columns = [f"PCK@{a} Wrist" for a in ta] + [f"PCK@{ta[-1]} All", "train E1", "val E1"]
  t = Table(f"spatial_dropout: dropout variants at {MAIN_POOL}x (paper Fig. 14b)", columns)
  kinds = (f"pool{MAIN_POOL}", f"stddropout{MAIN_POOL}", f"nodropout{MAIN_POOL}")
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  loss_fig, loss_ax = plt.subplots(figsize=(6, 4))
  for i, kind in enumerate(kinds):
    label = f"dropout: {ctx.run(kind, 0).config.model.dropout}"
    curves = []
    for s in range(ctx.seeds):
      run = ctx.run(kind, s)
      preds = ctx.preds(kind, s)
      _add_wrist_all(t, label, ctx.pck(preds, "cascade", ta), ta)
      curves.append(ctx.pck(preds, "cascade")["Wrist"])
      tb = read_scalars(os.path.join(run.directory, "tensorboard"), ["train/e1"])["train/e1"]
      steps = checkpoint_steps(run.directory)
      val = []
      for step in steps:
        p = ctx.preds(kind, s, step)
        val.append(float(p["e1_sum"].sum() / max(p["e1_count"].sum(), 1.0)))
      t.add(label, "train E1", tb[1][-1] if tb[1].size else None)
      t.add(label, "val E1", val[-1])
      suffix = f" (seed {run.config.seed})" if ctx.seeds > 1 else ""
      loss_ax.plot(tb[0], tb[1], "-", color=f"C{i}", alpha=0.6, label=f"{label} train{suffix}")
      loss_ax.plot(steps, val, "o--", color=f"C{i}", label=f"{label} val{suffix}")
    _plot_mean(ax, ctx.alphas, curves, "-", label, f"C{i}")
  _pck_axes(ax, f"wrist, cascade, {MAIN_POOL}x pooling (Fig. 14b)", ctx.base.eval.normalizer)
  loss_ax.set_xlabel("step")
  loss_ax.set_ylabel("coarse loss E1")
  lo, hi = loss_ax.get_ylim()
  if lo > 0 and hi / lo > 20:
    loss_ax.set_yscale("log")
  loss_ax.grid(alpha=0.3)
  loss_ax.legend(fontsize=6)
  bounds = train.phase_bounds(ctx.run(kinds[0], 0).config)
  for _, _, end in bounds[:-1]:
    loss_ax.axvline(end, color="gray", lw=0.5)
  fig.tight_layout()
  loss_fig.tight_layout()
  _save(fig, out_dir, "pck_wrist.png", t)
  _save(loss_fig, out_dir, "loss_curves.png", t)
  t.notes += [
    "train E1: the coarse loss logged during training (TensorBoard train/e1: augmented "
    "batches, dropout on in the coarse and joint phases); the value in the table is the last one logged.",
    "val E1: the same loss on the un-augmented eval split, dropout off, at every kept "
    "checkpoint (vertical lines: phase boundaries).",
  ]
  return t


def forward_ms_pair(
  model,
  params,
  input_hw: tuple[int, int],
  batch_size: int,
  *,
  dtype: jnp.dtype = jnp.float32,
  iters: int = 50,
  warmup: int = 3,
) -> tuple[float, float]:
  """Milliseconds per image of the coarse model and of the whole cascade.

  As `benchmark.forward_ms` (jit-compiled, warm, random inputs on the device,
  median of `iters` calls each timed around `block_until_ready`), but the two
  are timed interleaved, call for call, so that fine = cascade − coarse is a
  difference under the same conditions (at batch 1 both are a few ms of kernel
  launches on a GPU, and two separate medians can differ by more than the fine
  model's cost).

  Args:
    model, params, input_hw, batch_size, dtype: as `benchmark.forward_ms`.
    iters: timed calls of each.
    warmup: untimed calls of each, the first of which compiles.

  Returns:
    (coarse ms per image, cascade ms per image).
  """
  m = benchmark.with_dtype(model, dtype)
  fns = (
    jax.jit(lambda p, x: m.apply({"params": p}, x, train=False, method=m.coarse_heatmaps)),
    jax.jit(lambda p, x: m.apply({"params": p}, x, train=False)),
  )
  params = jax.device_put(params)
  rng = np.random.default_rng(0)
  xs = [jax.device_put(rng.random((batch_size, *input_hw, 3), np.float32)) for _ in range(3)]
  for fn in fns:
    for i in range(max(1, warmup)):  # the first call compiles
      jax.block_until_ready(fn(params, xs[i % len(xs)]))
  times: tuple[list[float], list[float]] = ([], [])
  for i in range(max(1, iters)):
    x = xs[i % len(xs)]
    for fn, ts in zip(fns, times, strict=True):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(params, x))
      ts.append(time.perf_counter() - t0)
  c, k = (1e3 * float(np.median(ts)) / batch_size for ts in times)
  return c, k


def timing(ctx: Context, out_dir: str) -> Table:
  """Table 2: compiled, warm forward milliseconds per image (random parameters)."""
  base = ctx.base
  columns = []
  batch_sizes = ctx.timing_batch_sizes
  for b in batch_sizes:
    columns += [f"coarse ms (batch {b})", f"fine ms (batch {b})", f"cascade ms (batch {b})"]
  t = Table("timing: forward-propagation time per image (paper Table 2)", columns)
  dtype = benchmark.DTYPES[base.dtype]
  hw = tuple(base.input_hw)
  ms = {}
  for p in POOLS:
    cfg = apply_overrides(base, {"model.pool_factor": p, "model.standard_cascade": False})
    model = eval_model(cfg)
    params = benchmark.random_params(model, hw)
    for b in batch_sizes:
      c, k = forward_ms_pair(
        model, params, hw, b, dtype=dtype, iters=ctx.timing_iters, warmup=min(3, ctx.timing_iters)
      )
      row = f"{p}x pool"
      t.add(row, f"coarse ms (batch {b})", c)
      t.add(row, f"fine ms (batch {b})", k - c)
      t.add(row, f"cascade ms (batch {b})", k)
      ms[(p, b)] = (c, k - c)
  plt = _plt()
  fig, axes = plt.subplots(1, len(batch_sizes), figsize=(4.5 * len(batch_sizes), 3.5))
  axes = np.atleast_1d(axes)
  x = np.arange(len(POOLS))
  for ax, b in zip(axes, batch_sizes, strict=True):
    c = np.array([ms[(p, b)][0] for p in POOLS])
    f = np.array([ms[(p, b)][1] for p in POOLS])
    ax.bar(x, c, label="coarse")
    ax.bar(x, f, bottom=c, label="fine")
    ax.set_xticks(x, [f"{p}x" for p in POOLS])
    ax.set_ylabel("ms per image")
    ax.set_title(f"batch {b}, {jax.devices()[0].device_kind}", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  _save(fig, out_dir, "forward_ms.png", t)
  t.notes += [
    f"{base.dataset} model at {hw[1]}x{hw[0]} (W x H), {base.dtype}, random parameters "
    "(the time does not depend on the weights); jit-compiled, warm, inputs on the device, "
    f"median of {ctx.timing_iters} calls, coarse and cascade interleaved (forward_ms_pair).",
    "fine = cascade − coarse (crop module, fine model, decoding). The paper times FLIC models "
    "at batch 1 on a K40; its Table 2 is per image.",
  ]
  return t


def mpii_table(ctx: Context, out_dir: str) -> Table:
  """Table 4 + Fig. 16: scale-normalized vs unnormalized training and testing."""
  skel, base = ctx.skeleton, ctx.base
  alpha = (
    metrics.MPII_TABLE_THRESHOLD if base.eval.normalizer == "head_size" else ctx.thresholds[-1]
  )
  cols = list(skel.table_indices())
  if len(skel.table) > 4:
    cols += ["UBody", "Total"]
  t = Table(
    f"mpii_table: PCK{'h' if base.eval.normalizer == 'head_size' else ''}@{alpha} (paper Table 4, Fig. 16)",
    cols,
  )
  p = table_pool(base)
  norm = f"pool{p}"
  un = ctx.run("unnormalized", 0).config
  crops = {
    "normalized": {"crop_mode": base.crop_mode, "image_scale": base.image_scale},
    "unnormalized": {"crop_mode": "unnormalized", "image_scale": un.image_scale},
  }
  rows = (
    (norm, "normalized", "scale normalized"),
    (norm, "unnormalized", "scale normalized (test only)"),
    ("unnormalized", "unnormalized", "unnormalized"),
    ("unnormalized", "normalized", "unnormalized (normalized test)"),
  )
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  for kind, crop, label in rows:
    curves = []
    for s in range(ctx.seeds):
      preds = ctx.preds(kind, s, **crops[crop])
      rates, counts = metrics.pck_curve(
        preds["cascade"],
        preds["joints"],
        preds["joints_valid"] > 0,
        preds[base.eval.normalizer],
        [alpha],
      )
      row = metrics.table(rates[0], counts, skel, len(skel.table) > 4)
      for c in cols:
        t.add(label, c, row[c])
      curves.append(ctx.pck(preds, "cascade")["All"])
    style = "-" if kind == norm else "--"
    _plot_mean(ax, ctx.alphas, curves, style, f"{p}x {label}")
  _pck_axes(ax, "all joints (Fig. 16)", base.eval.normalizer)
  fig.tight_layout()
  _save(fig, out_dir, "pck_all_joints.png", t)
  t.notes += [
    f"Both models at {p}x pooling, cascade estimates. 'normalized' test crops use the base "
    f"config's crop mode ({base.crop_mode!r}); 'unnormalized' crops use crop_mode 'unnormalized' "
    f"with image_scale {un.image_scale or 1 / 3:.3g} canvas px per image px (the unnormalized run's).",
    "Rows: model (training crops) and, in parentheses, the test crops when they differ.",
  ]
  return t


EXPERIMENT_FNS: dict[str, Callable[[Context, str], Table]] = {
  "pooling": pooling,
  "cascade": cascade,
  "shared_features": shared_features,
  "spatial_dropout": spatial_dropout,
  "timing": timing,
  "mpii_table": mpii_table,
}


# --- the entry point -------------------------------------------------------------


def _header(
  ctx_runs: dict[tuple[str, int], Run],
  kinds: Sequence[str],
  base: ml_collections.ConfigDict,
  seeds: int,
  command: str,
  num_eval: int | None,
) -> dict[str, str]:
  dataset = base.tfds_name + (
    f"/{base.tfds_config}" if base.tfds_config else " (default builder config)"
  )
  runs = []
  for k in kinds:
    r = ctx_runs[(k, 0)].config
    runs.append(f"{k} (steps {r.coarse_steps}/{r.fine_steps}/{r.joint_steps})")
  d = jax.devices()[0]
  return {
    "dataset": f"{dataset}, eval split {base.eval_split!r}"
    + (f" ({num_eval} examples)" if num_eval is not None else ""),
    "seeds": ", ".join(str(int(base.seed) + s) for s in range(seeds))
    + (" (mean ± std over seeds)" if seeds > 1 else ""),
    "runs (steps coarse/fine/joint)": ", ".join(runs) if runs else "none (random parameters)",
    "device": f"{d.device_kind} ({d.platform}, {jax.device_count()} device(s))",
    "command": f"`{command}`",
  }


def run_experiments(
  config: ml_collections.ConfigDict,
  workdir: str,
  experiments: Sequence[str],
  *,
  config_arg: str,
  config_overrides: Sequence[str] = (),
  seeds: int = 1,
  max_parallel: int = 1,
  checkpoints_per_run: int = 10,
  timing_iters: int = 50,
  timing_batch_sizes: Sequence[int] = TIMING_BATCH_SIZES,
  command: str = "",
  child_env: dict[str, str] | None = None,
  compilation_cache_dir: str = "",
) -> dict[str, dict]:
  """Trains the runs the experiments need, then writes each experiment's outputs.

  Args:
    config: the base config (the command line's, overrides applied).
    workdir: runs go to `workdir/runs/`, experiment `e` to `workdir/e/`.
    experiments: names from `EXPERIMENTS` (or ['all']).
    config_arg: the `--config` value (file[:args]) the runs are trained with.
    config_overrides: the command line's `--config.key=value` arguments, passed to
      every run.
    seeds: runs per configuration (seeds config.seed + 0 … seeds − 1).
    max_parallel: training subprocesses at a time.
    checkpoints_per_run: about this many checkpoints per run, all kept.
    timing_iters: timed calls per measurement of `timing`.
    timing_batch_sizes: the batch sizes `timing` measures.
    command: the command line, quoted in every table.
    child_env: environment of the training subprocesses (default: this one's).
    compilation_cache_dir: JAX's persistent compilation cache for the training
      subprocesses ("" for none): runs that share a train step (same model, or
      the fine phase of the dropout variants) and repeated seeds compile once.

  Returns:
    experiment -> its table.json content.
  """
  names = list(EXPERIMENTS) if "all" in experiments else list(experiments)
  for n in names:
    runs_of(n, config)  # validates the name
  if seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {seeds}")
  if {"pooling", "cascade"} & set(names) and not int(config.coarse_steps):
    raise ValueError("pooling and cascade need the coarse phase: config.coarse_steps is 0")
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  kinds = list(dict.fromkeys(k for n in names for k in runs_of(n, config)))
  scale = unnormalized_image_scale(config) if "unnormalized" in kinds else 0.0
  runs = {
    (k, s): make_run(
      config, workdir, k, s, checkpoints_per_run=checkpoints_per_run, unnormalized_scale=scale
    )
    for k in kinds
    for s in range(seeds)
  }
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head, _, tail = config_arg.partition(":")
  if os.path.exists(head):
    config_arg = os.path.abspath(head) + (f":{tail}" if tail else "")
  env = dict(os.environ if child_env is None else child_env)
  if compilation_cache_dir:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(compilation_cache_dir))
  if jax.default_backend() != "cpu" and max_parallel > 1:
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / max_parallel:.2f}")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  train_runs(
    list(runs.values()),
    config_arg=config_arg,
    config_overrides=config_overrides,
    max_parallel=max_parallel,
    env=env,
    cwd=repo,
  )
  evaluator = Evaluator(Mesh(np.array(jax.devices()), ("data",)))
  results = {}
  for n in names:
    out_dir = os.path.join(workdir, n)
    os.makedirs(out_dir, exist_ok=True)
    n_kinds = runs_of(n, config)
    num_eval = None
    if n_kinds:
      p = evaluator.predictions(runs[(n_kinds[0], 0)])
      num_eval = int(p["joints"].shape[0])
    header = _header(runs, n_kinds, config, seeds, command, num_eval)
    ctx = Context(
      config, workdir, seeds, runs, evaluator, header, timing_iters, tuple(timing_batch_sizes)
    )
    logging.info("experiment %s", n)
    table = EXPERIMENT_FNS[n](ctx, out_dir)
    if jax.process_index() == 0:
      result = table.to_json(header)
      evaluation.write_json_atomic(result, os.path.join(out_dir, "table.json"))
      with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table.to_markdown(header))
      results[n] = result
      logging.info("%s", table.to_markdown(header))
  _write_summary(workdir)
  return results


def _write_summary(workdir: str) -> None:
  parts = ["# heatpose_jax: the paper's experiments\n"]
  for n in EXPERIMENTS:
    path = os.path.join(workdir, n, "table.md")
    if os.path.exists(path):
      with open(path) as f:
        text = f.read()
      # Figures are relative to the experiment's folder.
      parts.append(text.replace("](", f"]({n}/"))
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write("\n".join(parts))
