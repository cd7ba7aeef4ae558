"""Training of the cascade: the train state, the one jitted train step, the loop.

The paper's three phases (§4.2) run back to back on one global step counter:
  1. 'coarse': the coarse model on E1;
  2. 'fine': the fine model on E2, the coarse model frozen;
  3. 'joint': both on E3 = E1 + λ·E2.
Each phase optimizes its own parameters with its own optimizer and state
(`make_optimizers`): the fine phase starts with fresh Adam moments and its own
step count, so its bias correction and schedule are those of a new optimizer.

`make_train_step` returns the one jitted step of a phase (shardings over a 1-D
data `Mesh`, the state donated); augmentation and targets run on the device
inside it. `train_and_evaluate(config, workdir)` is the loop: resume, train,
checkpoint, evaluate (`evaluation.Evaluator`), write metrics as JSON lines and
TensorBoard events (`metric_writer`). Only the top-level functions here read the
config; see `from_config` for what it turns into.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import (
  augment,
  checkpoints,
  codec,
  evaluation,
  fileio,
  from_config,
  input_pipeline,
  losses,
  metric_writer,
  spatial_training,
)

PHASES = ("coarse", "fine", "joint")
# The parameter groups (top-level keys of the cascade's params) each phase trains.
PHASE_PARAMS = {"coarse": ("coarse",), "fine": ("fine",), "joint": ("coarse", "fine")}


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds, plus how to apply and update it (flax's TrainState idea).

  Attributes:
    step: the global step (all phases).
    params: the cascade's parameters.
    opt_state: phase -> that phase's optimizer state over `phase_params(params, phase)`.
    apply_fn: the model's `apply`.
    tx: phase -> its `optax` transformation.
  """

  step: jax.Array
  params: Any
  opt_state: dict[str, Any]
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: dict[str, optax.GradientTransformation] = flax.struct.field(pytree_node=False)


def phase_params(params, phase: str) -> dict:
  """The parameter groups `phase` trains."""
  return {k: params[k] for k in PHASE_PARAMS[phase]}


def make_optimizer(
  *, learning_rate: float, steps: int, warmup_steps: int, weight_decay: float, grad_clip: float
) -> optax.GradientTransformation:
  """One phase's AdamW: linear warmup, then cosine decay to 1 % over the phase.

  The learning rate is an injected hyper-parameter, so `learning_rate(state)`
  reads it back; the schedule counts this optimizer's own steps.
  """
  warm = min(warmup_steps, max(1, steps // 10))
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, learning_rate, warm, max(steps, warm + 1), learning_rate * 0.01
  )
  return optax.chain(
    optax.clip_by_global_norm(grad_clip),
    optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=weight_decay),
  )


def learning_rate(opt_state) -> jax.Array:
  """The learning rate of the last update of a `make_optimizer` state."""
  return opt_state[1].hyperparams["learning_rate"]


def _init_state(model, tx: dict, input_hw: tuple[int, int], key) -> TrainState:
  x = jnp.zeros((1, *input_hw, 3), jnp.uint8)
  params = model.init({"params": key}, x, train=False)["params"]
  opt_state = {p: t.init(phase_params(params, p)) for p, t in tx.items()}
  return TrainState(jnp.zeros((), jnp.int32), params, opt_state, model.apply, tx)


def create_state(model, tx: dict, input_hw: tuple[int, int], mesh: Mesh, key) -> TrainState:
  """The initial state (compiled init), replicated over the mesh.

  Use a key made with `impl='rbg'`: XLA:CPU compiles threefry's truncated
  normals slowly, and the init is replicated, so its values do not depend on
  the device layout.
  """
  init = functools.partial(_init_state, model, tx, tuple(input_hw))
  return jax.jit(init, out_shardings=NamedSharding(mesh, PartitionSpec()))(key)


def abstract_state(model, tx: dict, input_hw: tuple[int, int], mesh: Mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, by `jax.eval_shape`.

  Nothing is compiled: resume, parameters-only restore and the benchmark all
  start from this.
  """
  init = functools.partial(_init_state, model, tx, tuple(input_hw))
  shapes = jax.eval_shape(init, jax.random.key(0, impl="rbg"))
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


def make_train_step(
  phase: str,
  *,
  mesh: Mesh,
  augmentation: augment.Augmentation,
  coarse_codec: codec.HeatmapCodec,
  fine_codec: codec.WindowCodec,
  lam: float,
  donate: bool = True,
):
  """The jitted train step of `phase`: `(state, batch, key) -> (state, metrics)`.

  The batch (design.md's layout, uint8 images) is sharded over the mesh's
  'data' axis, the state replicated and donated. Per step: augmentation on the
  device, Gaussian targets from the codecs, forward, backward, the phase's
  optimizer. A step whose loss, gradient or updated parameters are not finite
  leaves the state unchanged and reports `ok = 0`.
  """
  if phase not in PHASES:
    raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")

  def step(state: TrainState, batch: dict, key: jax.Array):
    rng = jax.random.fold_in(key, state.step)
    aug_rng, drop_rng = jax.random.split(rng)
    batch = augmentation(aug_rng, batch)
    images = batch["image"]
    valid = batch["joints_valid"] * batch["_mask"][:, None]
    hw = coarse_codec.heatmap_hw(images.shape[1:3])
    t_coarse = coarse_codec.encode(batch["joints"], valid, hw)
    rngs = {"dropout": drop_rng}

    def loss_fn(trained):
      v = {"params": {**state.params, **trained}}
      if phase == "coarse":
        heat = state.apply_fn(v, images, train=True, method="coarse_heatmaps", rngs=rngs)
        e1 = losses.coarse_loss(heat, t_coarse, valid)
        return e1, {"e1": e1, "e2": jnp.zeros(())}
      out = state.apply_fn(v, images, train=True, freeze_coarse=phase == "fine", rngs=rngs)
      e1 = losses.coarse_loss(out["coarse_heatmaps"], t_coarse, valid)
      t_fine = fine_codec.encode(batch["joints"], valid, out["window_origin"])
      e2 = losses.fine_loss(out["fine_heatmaps"], t_fine, valid)
      loss = e2 if phase == "fine" else losses.joint_loss(e1, e2, lam)
      return loss, {"e1": e1, "e2": e2}

    trained = phase_params(state.params, phase)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
    updates, opt_state = state.tx[phase].update(grads, state.opt_state[phase], trained)
    new = optax.apply_updates(trained, updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(new))
    keep = functools.partial(jax.tree.map, lambda a, b: jnp.where(ok, a, b))
    new_state = state.replace(
      step=state.step + 1,
      params={**state.params, **keep(new, trained)},
      opt_state={**state.opt_state, phase: keep(opt_state, state.opt_state[phase])},
    )
    metrics = {
      "loss": loss,
      **aux,
      "grad_norm": grad_norm,
      "learning_rate": learning_rate(opt_state),
      "ok": ok.astype(jnp.float32),
    }
    return new_state, metrics

  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec("data"))
  return jax.jit(
    step,
    in_shardings=(replicated, data, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,) if donate else (),
  )


def parameter_overview(params) -> str:
  """A table of each parameter's shape and size."""
  lines = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    lines.append(f"{name:48s} {str(tuple(leaf.shape)):22s} {leaf.size:>10,d}")
  total = sum(x.size for x in jax.tree.leaves(params))
  return "\n".join(lines + [f"{'total':48s} {'':22s} {total:>10,d}"])


class _Progress:
  """The progress line: step, phase, losses, images/s and ETA."""

  def __init__(self, total: int, start: int, batch_size: int):
    self.total, self.batch = total, batch_size
    self.t0, self.s0 = time.time(), start

  def line(self, step: int, phase: str, m: dict) -> str:
    rate = (step - self.s0) / max(time.time() - self.t0, 1e-9)
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


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    fileio.write_json(
      os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort())
    )


def _close(it) -> None:
  close = getattr(it, "close", None)
  if close:
    close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh=None) -> dict:
  """Trains the three phases (resumable) and evaluates; returns the final evaluation.

  Resume order: the newest usable checkpoint in `workdir` (unreadable or
  non-finite ones are set aside, see `checkpoints.restore_latest`) →
  `config.init_from` → scratch. The run's `config.json` is written once the
  config is known to fit the checkpoint. SIGTERM (on any process) saves a
  checkpoint at a step all processes agree on and returns; a non-finite step
  raises `FloatingPointError` naming the step range and the last good checkpoint.

  Args:
    config: see `heatpose_jax/configs`.
    workdir: checkpoints, metrics.jsonl, tensorboard/, eval/ and config.json.
    mesh: the data mesh (default: every device, `input_pipeline.make_mesh`).
  """
  from_config.check(config)
  mesh = input_pipeline.make_mesh() if mesh is None else mesh
  from_config.check_devices(config, mesh)
  os.makedirs(workdir, exist_ok=True)
  model = from_config.model(config)
  tx = from_config.optimizers(config)
  bounds = from_config.phase_bounds(config)
  total = bounds[-1][2]
  hw = tuple(config.input_hw)
  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  state, latest = checkpoints.restore_latest(mngr, abstract_state(model, tx, hw, mesh))
  # The data first: an unbuilt dataset fails before anything is compiled or written.
  source = None
  if (latest or 0) < total:
    split = config.train_split
    source = from_config.dataset_source(config, split)
    source = from_config.cached(config, source, split, workdir, training=True)
  if state is not None:
    if jax.process_index() == 0:
      print(f"resumed from {workdir} step {latest}", flush=True)
  else:
    state = create_state(model, tx, hw, mesh, jax.random.key(config.seed, impl="rbg"))
    if config.init_from:
      params, step = checkpoints.restore_params(
        _workdir_of(config.init_from), abstract_state(model, tx, hw, mesh).params
      )
      state = state.replace(params=params)
      logging.info("initialized parameters from %s step %d", config.init_from, step)
    logging.info("parameters:\n%s", parameter_overview(state.params))
  _write_config(config, workdir)
  start = int(jax.device_get(state.step))
  writer = metric_writer.MetricWriter(workdir)
  evaluator = None

  def evaluate(params, step, mrf=None):
    nonlocal evaluator
    if evaluator is None or mrf is not None:
      evaluator = evaluation.build_evaluator(config, model, mesh, workdir, mrf=mrf)
    writer.write(step, {f"eval/{k}": v for k, v in evaluator.run(params)})
    result = {**evaluator.result, "step": step}
    if jax.process_index() == 0:
      fileio.write_json(os.path.join(workdir, "eval", f"{step}.json"), result)
      title = f"{config.dataset} {config.eval_split}, step {step}"
      print(evaluation.format_table(result, title), flush=True)
    return result

  try:
    if start < total:
      state = _train(config, workdir, state, bounds, mesh, mngr, writer, evaluate, source)
      if state is None:  # stopped by SIGTERM
        return {"stopped_at": int(checkpoints.last_step(mngr))}
    mrf = None
    if config.spatial_model.enabled:  # after the three phases; reused when already saved
      mrf = fit_spatial_model(config, model, state.params, mesh, workdir, total)
    return evaluate(state.params, total, mrf)
  finally:
    writer.close()
    mngr.close()


def _workdir_of(path: str) -> str:
  """A workdir, or the workdir of a `.../checkpoints` directory."""
  path = os.path.abspath(path)
  return os.path.dirname(path) if os.path.basename(path) == checkpoints.SUBDIR else path


def _train(config, workdir, state, bounds, mesh, mngr, writer, evaluate, source):
  """The loop from `state.step` to the end; the final state, or None after SIGTERM."""
  total = bounds[-1][2]
  start = int(jax.device_get(state.step))
  steps = {name: from_config.train_step(config, name, mesh) for name, _, _ in bounds}
  ends = {end for _, _, end in bounds}
  key = jax.random.key(config.seed)
  # The data stream is a pure function of (seed, step): a resumed run sees
  # exactly the batches the interrupted one would have.
  batches = from_config.train_batches(config, workdir, start_batch=start, source=source)
  batch_iter = iter(batches)
  stop = {"term": False}
  previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))
  progress = _Progress(total, start, config.batch_size)
  multi = jax.process_count() > 1
  pending, checked = [], start
  try:
    for step in range(start, total):
      phase = next(name for name, s, e in bounds if s <= step < e)
      batch = input_pipeline.to_global_array(next(batch_iter), mesh)
      state, metrics = steps[phase](state, batch, key)
      pending.append(metrics)
      done = step + 1
      sync = done % config.log_every == 0 or done in ends or done == total
      # Every process must stop at the same step (the save is collective): with
      # several, they agree at the sync steps, which all of them reach together.
      stopping = (_any_process(stop["term"]) if sync else False) if multi else stop["term"]
      if sync or stopping or done % config.checkpoint_every == 0:
        ms = jax.device_get(pending)
        pending = []
        bad = [checked + i + 1 for i, m in enumerate(ms) if not m["ok"]]
        if bad:
          raise FloatingPointError(
            f"non-finite loss, gradient or parameters at steps {bad[0]}..{bad[-1]} (checked "
            f"{checked + 1}..{done}); the parameters of step {bad[0] - 1} are kept; last good "
            f"checkpoint: step {checkpoints.last_step(mngr)} in {checkpoints.directory(workdir)}"
          )
        checked = done
        mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
        if sync and jax.process_index() == 0:
          print(progress.line(done, phase, mean), flush=True)
        writer.write(done, {f"train/{k}": v for k, v in mean.items()})
      if done % config.checkpoint_every == 0 or done in ends or stopping:
        checkpoints.save(mngr, done, state)
      if done % config.eval_every == 0 and done != total:
        evaluate(state.params, done)
      if stopping:
        mngr.wait_until_finished()
        logging.warning("SIGTERM: saved step %d in %s and stopped", done, workdir)
        return None
  finally:
    signal.signal(signal.SIGTERM, previous)
    _close(batch_iter)
  mngr.wait_until_finished()
  return state


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
  """The MRF of the step-`step` cascade: loaded if saved, else fitted and saved.

  Fitted for `config.spatial_model.steps` Adam steps on the coarse model's
  heat-maps of un-augmented, shuffled training batches (`source`: these dataset
  features instead of the training split), and saved to
  `save_dir/spatial_model/mrf.npz` (default `save_dir`: `workdir`). A saved one
  is reused when its graph, cascade step, steps and learning rate match.
  """
  c = from_config.coarse_codec(config, model)
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
  saved = spatial_training.load(save_dir)
  if (
    saved is not None
    and saved.spec == spec
    and all(saved.info.get(k) == v for k, v in record.items())
  ):
    logging.info("spatial model: loaded %s", spatial_training.saved_path(save_dir))
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
    _close(it)
  mrf = spatial_training.FittedMRF(
    spec, mrf_params, {**record, "final_loss": seen[-1] if seen else None}
  )
  if jax.process_index() == 0:
    logging.info("spatial model: saved %s", spatial_training.save(save_dir, mrf))
  return mrf
