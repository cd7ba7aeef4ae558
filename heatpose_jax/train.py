"""Training of the cascade: `train_and_evaluate(config, workdir)`, the loop.

The config's phases (`config.phase_order`, `config.phases`: by default the
paper's three) run back to back on one global step counter, each with
its own jitted step (`train_step.make_train_step`, built from the config by
`from_config.train_step`) and its own optimizer state. The loop resumes, trains,
checkpoints (`checkpoints`), evaluates (`evaluate.build_evaluator`'s
`evaluator.Evaluator`) and writes metrics as JSON lines and TensorBoard events
(`metric_writer`); after SIGTERM or Ctrl-C (SIGINT) on any process, all processes
agree on the step to stop at. One writer per workdir (`workdir_lock`); a resumed
run's config is compared with the saved one (`config_changes`). After the last
phase, `fit_spatial_model` fits the run's MRF (`config.spatial_model`) with the
library's `spatial_training`. Only the top-level functions here read the config.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from heatpose_jax import config_changes, evaluate, from_config
from heatpose_jax.core import fileio, sharding, workdir_lock
from heatpose_jax.data import input_pipeline
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.mrf import spatial_training
from heatpose_jax.training import checkpoints, metric_writer
from heatpose_jax.training.train_step import abstract_state, create_state, parameter_overview


class _Progress:
  """The progress line: step, phase, losses, images/s and ETA."""

  def __init__(self, total: int, start: int, batch_size: int):
    self.total, self.batch = total, batch_size
    self.t0, self.s0 = time.time(), start

  def images_per_s(self, step: int) -> float:
    """Training images per second since this process started (or resumed)."""
    return (step - self.s0) * self.batch / max(time.time() - self.t0, 1e-9)

  def line(self, step: int, phase: str, m: dict) -> str:
    rate = self.images_per_s(step) / self.batch  # steps/s
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    bar = "#" * int(20 * step / self.total)
    return (
      f"[{bar:20s}] {step}/{self.total} {phase:6s} loss {m['loss']:.4f} "
      f"(E1 {m['e1']:.4f} E2 {m['e2']:.4f}) {rate * self.batch:.1f} img/s ETA {eta_s}"
    )


def _any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on any (a collective: all must call)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  mesh=None,
  allow_config_change: bool = False,
) -> dict:
  """Trains the config's phases (resumable) and evaluates; returns the final evaluation.

  Resume order: the newest usable checkpoint in `workdir` (unreadable or
  non-finite ones are set aside, see `checkpoints.restore_latest`) →
  `config.init_from` → scratch. Process 0 holds `WORKDIR/train.lock` for the
  whole call (`workdir_lock`): a second writer is refused at once. A config
  that differs from the saved `config.json` is checked first
  (`config_changes.check`: changes that alter what the saved steps mean are
  refused unless `allow_config_change`); the changes are printed and recorded in
  `config_history.jsonl` and `config.json` is replaced once the config is known
  to fit the checkpoint. SIGTERM or SIGINT (on any process) saves a checkpoint
  at a step all processes agree on and returns `{"stopped_at": step, "signal":
  "SIGTERM" | "SIGINT"}`; a second SIGINT ends the process at once. A
  non-finite step raises `FloatingPointError` naming the step range and the last
  good checkpoint.

  Args:
    config: see `heatpose_jax/configs`.
    workdir: checkpoints, metrics.jsonl, tensorboard/, eval/, config.json,
      config_history.jsonl and dataset_spec.json (the dataset's spec:
      `from_config.save_run_spec`).
    mesh: the data mesh (default: every device, `sharding.make_mesh`).
    allow_config_change: resume despite config changes that alter what the
      saved steps mean (`--allow_config_change`).

  Raises:
    workdir_lock.InUse: another process trains in `workdir`.
    config_changes.ConfigChangeError: the config changes what the saved steps mean.
  """
  from_config.check(config)
  mesh = sharding.make_mesh() if mesh is None else mesh
  from_config.check_devices(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0:  # one lock per job: the other processes are process 0's peers
      stack.enter_context(
        workdir_lock.hold(workdir, workdir_lock.TRAIN_LOCK, what=f"workdir {workdir}")
      )
    return _train_and_evaluate(config, workdir, mesh, allow_config_change)


def _train_and_evaluate(config, workdir, mesh, allow_config_change):
  model = from_config.model(config)
  phases = from_config.phases(config)
  bounds = from_config.phase_bounds(config)
  total = bounds[-1][2]
  hw = tuple(config.input_hw)
  with contextlib.ExitStack() as stack:
    mngr = checkpoints.manager(workdir, config.keep_checkpoints)
    stack.callback(mngr.close)
    abstract = abstract_state(model, phases, hw, mesh)
    changes = _check_config(config, workdir, mngr, abstract, allow_config_change)
    state, latest = checkpoints.restore_latest(mngr, abstract)
    # The data first: an unbuilt dataset, or an evaluation split that is missing or
    # has nothing to score (issue 18 class 3), fails before anything is compiled or written.
    from_config.eval_examples(config)
    source = None
    if (latest or 0) < total:
      split = config.train_split
      source = from_config.dataset_source(config, split)
      source = from_config.cached(config, source, split, workdir, training=True)
    if state is not None:
      if jax.process_index() == 0:
        print(f"resumed from {workdir} step {latest}", flush=True)
    else:
      state = create_state(model, phases, hw, mesh, jax.random.key(config.seed, impl="rbg"))
      if config.init_from:
        params, step = checkpoints.restore_params(_workdir_of(config.init_from), abstract.params)
        state = state.replace(params=params)
        logging.info("initialized parameters from %s step %d", config.init_from, step)
      logging.info("parameters:\n%s", parameter_overview(state.params))
    start = int(jax.device_get(state.step))
    if jax.process_index() == 0:
      if changes and changes["changed"]:
        print(config_changes.describe(changes), flush=True)
      config_changes.record(workdir, config, start, changes)
      from_config.save_run_spec(config, workdir)  # prediction's joints without the data dir
    writer = metric_writer.MetricWriter(workdir)
    stack.callback(writer.close)
    evaluator = None

    def run_evaluation(params, step, mrf=None):
      nonlocal evaluator
      if evaluator is None or mrf is not None:
        evaluator = evaluate.build_evaluator(config, model, mesh, workdir, mrf=mrf)
      writer.write(step, {f"eval/{k}": v for k, v in evaluator.run(params)})
      result = {**evaluator.result, "step": step}
      if jax.process_index() == 0:
        fileio.write_json(os.path.join(workdir, "eval", f"{step}.json"), result)
        title = f"{config.dataset} {config.eval_split}, step {step}"
        print(evaluator_lib.format_table(result, title), flush=True)
      return result

    if start < total:
      state = _train(config, workdir, state, bounds, mesh, mngr, writer, run_evaluation, source)
      if isinstance(state, _Stopped):
        return {"stopped_at": int(checkpoints.last_step(mngr)), "signal": state.signal}
    mrf = None
    if config.spatial_model.enabled:  # after the three phases; reused when already saved
      mrf = fit_spatial_model(config, model, state.params, mesh, workdir, total)
    return run_evaluation(state.params, total, mrf)


def fit_spatial_model(
  config: ml_collections.ConfigDict,
  model,
  params,
  mesh: Mesh,
  workdir: str,
  step: int,
  *,
  source=None,
  save_dir: str = "",
) -> spatial_training.FittedMRF:
  """The MRF of a run's step-`step` cascade: loaded if saved, else fitted and saved
  (after training's last step with `config.spatial_model.enabled`, and the MRF study;
  the library part: `spatial_training`). Fitted for `config.spatial_model.steps`
  Adam steps on the coarse heat-maps of un-augmented, shuffled training batches
  (`source`: these dataset features instead), saved to `save_dir/spatial_model/mrf.npz`
  (default `save_dir`: `workdir`); reused when its graph, cascade step, steps and
  learning rate match."""
  c = model.coarse_codec
  spec = spatial_training.MRFSpec.for_skeleton(
    from_config.skeleton(config), stride=c.stride, heatmap_hw=c.heatmap_hw(config.input_hw)
  )
  steps = int(config.spatial_model.steps)
  save_dir = save_dir or workdir
  record = {
    "cascade_step": step,
    "steps": steps,
    "learning_rate": float(config.spatial_model.learning_rate),
  }
  saved = _saved_spatial_model(save_dir, spec, record)
  if saved is not None:
    return saved
  batches = from_config.train_batches(config, workdir, source=source, seed_offset=1)
  it, seen = iter(batches), []

  def log(i, loss):
    seen.append(loss)
    logging.info("spatial model step %d/%d: loss %.4f", i, steps, loss)

  try:
    mrf_params = spatial_training.fit_from_cascade(
      model,
      params,
      it,
      spec=spec,
      steps=steps,
      learning_rate=record["learning_rate"],
      mesh=mesh,
      log_every=max(1, min(config.log_every, steps)),
      log_fn=log,
    )
  finally:
    input_pipeline.close(it)
  mrf = spatial_training.FittedMRF(
    spec, mrf_params, {**record, "final_loss": seen[-1] if seen else None}
  )
  if jax.process_index() == 0:
    logging.info("spatial model: saved %s", spatial_training.save(save_dir, mrf))
  return mrf


def _saved_spatial_model(
  save_dir: str, spec: spatial_training.MRFSpec, record: dict
) -> spatial_training.FittedMRF | None:
  """The MRF saved in `save_dir` if its graph is `spec` and its info matches `record`."""
  saved = spatial_training.load(save_dir)
  if (
    saved is not None
    and saved.spec == spec
    and all(saved.info.get(k) == v for k, v in record.items())
  ):
    logging.info("spatial model: loaded %s", spatial_training.saved_path(save_dir))
    return saved
  return None


def _check_config(config, workdir, mngr, abstract, allow: bool) -> dict | None:
  """`config_changes.check` against the saved config.json, before anything is restored.

  A changed model is reported first as the parameter whose shape differs, with the
  `model.*` fields that changed since the saved run (a field added since takes its
  default there: an old run resumed with a config that sets it).
  """
  newest = max(mngr.all_steps(), default=None)
  saved = config_changes.load_saved(workdir)
  if newest is not None:
    try:
      checkpoints.check_shapes(mngr, newest, abstract.params)
    except checkpoints.ShapeMismatch as e:
      fields = config_changes.model_changes(saved, config) if saved is not None else ""
      if not fields:
        raise
      raise checkpoints.ShapeMismatch(f"{e}; changed since it was trained: {fields}") from None
  if saved is None:
    if newest is not None:
      logging.warning("%s has checkpoints but no config.json: the config is not checked", workdir)
    return None
  return config_changes.check(saved, config, newest, allow=allow, workdir=workdir)


def _workdir_of(path: str) -> str:
  """A workdir, or the workdir of a `.../checkpoints` directory."""
  path = os.path.abspath(path)
  return os.path.dirname(path) if os.path.basename(path) == checkpoints.SUBDIR else path


class _Stopped:
  """What `_train` returns after SIGTERM or SIGINT: the signal that stopped it."""

  def __init__(self, signal_name: str):
    self.signal = signal_name


def _train(config, workdir, state, bounds, mesh, mngr, writer, run_evaluation, source):
  """The loop from `state.step` to the end; the final state, or `_Stopped` after a signal.

  SIGTERM and the first SIGINT (Ctrl-C) set a flag: the step under way ends,
  is saved, and the loop returns. After the first SIGINT, SIGINT has its
  default action again, so a second one ends the process at once, unsaved.
  """
  total = bounds[-1][2]
  start = int(jax.device_get(state.step))
  steps = {name: from_config.train_step(config, name, mesh) for name, _, _ in bounds}
  ends = {end for _, _, end in bounds}
  key = jax.random.key(config.seed)
  # The data stream is a pure function of (seed, step): a resumed run sees
  # exactly the batches the interrupted one would have.
  batches = from_config.train_batches(config, workdir, start_batch=start, source=source)
  batch_iter = iter(batches)
  stop = {"SIGTERM": False, "SIGINT": False}
  previous = _catch_stop_signals(stop)
  progress = _Progress(total, start, config.batch_size)
  multi = jax.process_count() > 1
  pending, checked = [], start
  try:
    for step in range(start, total):
      phase = next(name for name, s, e in bounds if s <= step < e)
      batch = sharding.to_global_array(next(batch_iter), mesh)
      state, metrics = steps[phase](state, batch, key)
      pending.append(metrics)
      done = step + 1
      sync = done % config.log_every == 0 or done in ends or done == total
      # Every process must stop at the same step (the save is collective): with
      # several, they agree at the sync steps, which all of them reach together.
      signalled = stop["SIGTERM"] or stop["SIGINT"]
      stopping = (_any_process(signalled) if sync else False) if multi else signalled
      if sync or stopping or done % config.checkpoint_every == 0:
        ms = jax.device_get(pending)
        pending = []
        _check_finite(ms, checked, done, mngr, workdir)
        checked = done
        mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
        if sync and jax.process_index() == 0:
          print(progress.line(done, phase, mean), flush=True)
        mean["img_per_s"] = progress.images_per_s(done)
        writer.write(done, {f"train/{k}": v for k, v in mean.items()})
      if done % config.checkpoint_every == 0 or done in ends or stopping:
        checkpoints.save(mngr, done, state)
      if done % config.eval_every == 0 and done != total:
        run_evaluation(state.params, done)
      if stopping:
        mngr.wait_until_finished()
        if stop["SIGINT"]:  # the command says it in one line (exit status 130)
          return _Stopped("SIGINT")
        logging.warning("SIGTERM: saved step %d in %s and stopped", done, workdir)
        return _Stopped("SIGTERM")
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    input_pipeline.close(batch_iter)
  mngr.wait_until_finished()
  return state


def _catch_stop_signals(stop: dict[str, bool]) -> dict:
  """Installs the handlers that set `stop["SIGTERM"]` and `stop["SIGINT"]`;
  returns {signal: the handler it replaced} for restoring them.

  After the first SIGINT, SIGINT has its default action again; a SIGINT that
  is ignored (e.g. a shell script's `cmd &`) stays ignored.
  """

  def on_sigint(*_):
    stop["SIGINT"] = True
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C: at once, unsaved

  previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: stop.update(SIGTERM=True))}
  if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # e.g. a shell script's `cmd &`
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
  return previous


def _check_finite(ms: list[dict], checked: int, done: int, mngr, workdir: str) -> None:
  """Raises FloatingPointError naming the steps of `ms` (steps checked + 1 .. done,
  fetched metrics) whose `ok` is 0, and the last good checkpoint."""
  bad = [checked + i + 1 for i, m in enumerate(ms) if not m["ok"]]
  if bad:
    raise FloatingPointError(
      f"non-finite loss, gradient or parameters at steps {bad[0]}..{bad[-1]} (checked "
      f"{checked + 1}..{done}); the parameters of step {bad[0] - 1} are kept; last good "
      f"checkpoint: step {checkpoints.last_step(mngr)} in {checkpoints.directory(workdir)}"
    )
