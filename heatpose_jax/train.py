"""Training and evaluation of the cascade: `train_and_evaluate(config, workdir)`.

The paper's three phases run back to back on one global step counter:
  1. 'coarse': the coarse model on E1;
  2. 'fine': the fine model on E2 with the coarse model frozen;
  3. 'joint': both on E3 = E1 + λ·E2.
Each phase has its own pure train step, jitted once with shardings and donation,
data-parallel over every device of a 1-D `Mesh(devices, ('data',))`. Augmentation
and the targets are made on the device inside the step.

Only this module's top-level functions read the config.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import (
  augment,
  codec,
  evaluation,
  input_pipeline,
  losses,
  models,
  spatial_training,
)
from heatpose_jax import joints as joints_lib

PHASES = ("coarse", "fine", "joint")


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds."""

  step: jax.Array
  params: Any
  opt_state: Any


# --- building blocks from the config -----------------------------------------


def build_model(config: ml_collections.ConfigDict) -> models.Cascade | models.StandardCascade:
  """The cascade that `config.model` describes."""
  m = config.model
  skeleton = joints_lib.get_skeleton(config.dataset)
  return models.make_model(
    num_joints=skeleton.num_joints,
    variant=m.variant,
    pool_factor=m.pool_factor,
    width=m.width,
    head_features=tuple(m.head_features),
    fine_convs=tuple(tuple(c) for c in m.fine_convs),
    fine_merge_features=m.fine_merge_features,
    context=m.context,
    dropout=m.dropout,
    dropout_rate=m.dropout_rate,
    standard_cascade=m.standard_cascade,
    dtype=_dtype(config.dtype),
  )


def _dtype(name: str):
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.float32 if name == "float32" else jnp.bfloat16


def phase_bounds(config: ml_collections.ConfigDict) -> list[tuple[str, int, int]]:
  """[(phase, first step, end step)] of the phases with steps, in order."""
  out, start = [], 0
  for name in PHASES:
    n = int(config[f"{name}_steps"])
    if n < 0:
      raise ValueError(f"config.{name}_steps must be >= 0, got {n}")
    if n:
      out.append((name, start, start + n))
      start += n
  if not out:
    raise ValueError("config: coarse_steps + fine_steps + joint_steps is 0: nothing to train")
  return out


def phase_at(bounds, step: int) -> str:
  for name, start, end in bounds:
    if start <= step < end:
      return name
  return bounds[-1][0]


def make_optimizer(config: ml_collections.ConfigDict, bounds) -> optax.GradientTransformation:
  """Adam(W) with per-phase warmup + cosine schedules, joined at the phase starts.

  One optimizer serves all phases so its state has one structure; which
  parameters a phase may change is decided by `phase_mask` in the step.
  """
  schedules, boundaries = [], []
  for name, start, end in bounds:
    peak = config.joint_learning_rate if name == "joint" else config.learning_rate
    warm = min(config.warmup_steps, max(1, (end - start) // 10))
    schedules.append(
      optax.warmup_cosine_decay_schedule(0.0, peak, warm, max(end - start, warm + 1), peak * 0.01)
    )
    if start:
      boundaries.append(start)
  schedule = optax.join_schedules(schedules, boundaries) if boundaries else schedules[0]
  return optax.chain(
    optax.clip_by_global_norm(config.grad_clip),
    optax.adamw(schedule, weight_decay=config.weight_decay),
  ), schedule


def phase_mask(params, phase: str):
  """1.0 for the parameters a phase trains, 0.0 for the frozen ones."""
  train = {"coarse": ("coarse",), "fine": ("fine",), "joint": ("coarse", "fine")}[phase]
  return {
    k: jax.tree.map(functools.partial(lambda on, _: on, float(k in train)), v)
    for k, v in params.items()
  }


# --- the train step ----------------------------------------------------------


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  key: jax.Array,
  *,
  model,
  optimizer: optax.GradientTransformation,
  schedule,
  phase: str,
  flip_perm: np.ndarray,
  rotation: float,
  scale_range: tuple[float, float],
  flip_prob: float,
  sigma_coarse: float,
  sigma_fine: float,
  lam: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of `phase` on a global batch; pure, for `jax.jit`.

  A step whose loss or gradient is not finite leaves the state unchanged (the
  host sees `ok = 0` and stops the run).
  """
  rng = jax.random.fold_in(key, state.step)
  aug_rng, drop_rng = jax.random.split(rng)
  batch = augment.augment_batch(
    aug_rng,
    batch,
    flip_perm,
    max_rotation_deg=rotation,
    scale_range=scale_range,
    flip_prob=flip_prob,
  )
  images = batch["image"] / 255.0
  valid = batch["joints_valid"] * batch["_mask"][:, None]
  stride = model.coarse.stride
  hw = (-(-images.shape[1] // stride), -(-images.shape[2] // stride))
  t_coarse = codec.coarse_targets(batch["joints"], valid, hw, stride, sigma_coarse)

  def loss_fn(params):
    v = {"params": params}
    if phase == "coarse":
      heat = model.apply(
        v, images, train=True, method=model.coarse_heatmaps, rngs={"dropout": drop_rng}
      )
      e1 = losses.coarse_loss(heat, t_coarse, valid)
      return e1, {"e1": e1, "e2": jnp.zeros(())}
    out = model.apply(
      v, images, train=True, freeze_coarse=phase == "fine", rngs={"dropout": drop_rng}
    )
    e1 = losses.coarse_loss(out["coarse_heatmaps"], t_coarse, valid)
    t_fine = codec.fine_targets(
      batch["joints"], valid, out["window_origin"], model.context, sigma_fine
    )
    e2 = losses.fine_loss(out["fine_heatmaps"], t_fine, valid)
    loss = e2 if phase == "fine" else losses.joint_loss(e1, e2, lam)
    return loss, {"e1": e1, "e2": e2}

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u, m: u * m, updates, phase_mask(updates, phase))
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(ok, new, old))
  new_state = TrainState(
    state.step + 1, keep(params, state.params), keep(opt_state, state.opt_state)
  )
  metrics = {
    "loss": loss,
    **aux,
    "grad_norm": grad_norm,
    "learning_rate": schedule(state.step),
    "ok": ok.astype(jnp.float32),
  }
  return new_state, metrics


def step_function(config: ml_collections.ConfigDict, model, optimizer, schedule, phase: str):
  """`train_step` of `phase` with the config's arguments bound: (state, batch, key)."""
  return functools.partial(
    train_step,
    model=model,
    optimizer=optimizer,
    schedule=schedule,
    phase=phase,
    flip_perm=joints_lib.get_skeleton(config.dataset).flip_permutation,
    rotation=config.augment.rotation,
    scale_range=tuple(config.augment.scale),
    flip_prob=config.augment.flip,
    sigma_coarse=config.model.sigma_coarse,
    sigma_fine=config.model.sigma_fine,
    lam=config.lam,
  )


# --- data --------------------------------------------------------------------


def data_source(config: ml_collections.ConfigDict, split: str):
  """The TFDS data source of a split, read without importing `data_prep`."""
  import tensorflow_datasets as tfds

  data_dir = (
    config.data_dir
    or os.environ.get("TFDS_DATA_DIR")
    or os.path.expanduser("~/tensorflow_datasets")
  )
  name = config.tfds_name + (f"/{config.tfds_config}" if config.tfds_config else "")
  root = os.path.join(data_dir, config.tfds_name)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception:  # Not registered (data_prep not imported): read what was built.
    builder = None
    d = os.path.join(root, config.tfds_config) if config.tfds_config else root
    if os.path.isdir(d):
      # builder_from_directory needs the version dir: pick the newest complete one.
      versions = sorted(
        v for v in os.listdir(d) if os.path.exists(os.path.join(d, v, "dataset_info.json"))
      )
      if not versions and not config.tfds_config:
        configs = [c for c in os.listdir(d) if os.path.isdir(os.path.join(d, c))]
        for c in sorted(configs):
          vs = [
            v
            for v in os.listdir(os.path.join(d, c))
            if os.path.exists(os.path.join(d, c, v, "dataset_info.json"))
          ]
          if vs:
            d, versions = os.path.join(d, c), sorted(vs)
            break
      if versions:
        builder = tfds.builder_from_directory(os.path.join(d, versions[-1]))
  if builder is None or not builder.is_prepared():
    raise FileNotFoundError(
      f"dataset {name!r} is not built in {data_dir!r} (config.data_dir / $TFDS_DATA_DIR): run "
      f"`python -m data_prep.build --dataset={config.tfds_name} --data_dir={data_dir}"
      + (f" --config={config.tfds_config}" if config.tfds_config else "")
      + " [--manual_dir=...]`"
    )
  if split not in builder.info.splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; it has {list(builder.info.splits)}")
  return builder.as_data_source(split)


def _pipeline_kwargs(config) -> dict:
  return {
    "skeleton": joints_lib.get_skeleton(config.dataset),
    "crop_mode": config.crop_mode,
    "canvas_hw": tuple(config.input_hw),
    "image_scale": config.image_scale or None,
    "box_scale": config.box_scale or None,
  }


def _maybe_cache(config, source, split: str, workdir: str):
  if not config.canvas_cache:
    return source
  path = os.path.join(workdir, "canvas_cache", split)
  kw = _pipeline_kwargs(config)
  return input_pipeline.build_canvas_cache(source, path=path, **kw)


class _Limit:
  """The first `n` examples of a source (fast evaluation of long splits)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


def eval_source(config, workdir: str):
  source = data_source(config, config.eval_split)
  if config.max_eval_examples:
    source = _Limit(source, config.max_eval_examples)
  return _maybe_cache(config, source, config.eval_split, workdir)


def eval_batches(config, source):
  return input_pipeline.make_dataset(
    source,
    global_batch_size=config.batch_size,
    shuffle=False,
    num_epochs=1,
    drop_remainder=False,
    worker_count=config.worker_count,
    **_pipeline_kwargs(config),
  )


# --- checkpoints -------------------------------------------------------------


def checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints; orbax writes each one atomically."""
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, "checkpoints")),
    options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
  )


def _restore(mngr: ocp.CheckpointManager, step: int, target: TrainState) -> TrainState:
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract))


def _init_from(path: str, target: TrainState) -> TrainState:
  """Parameters (only) from another run's latest checkpoint or a checkpoint dir."""
  ckpt = (
    os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
  )
  mngr = ocp.CheckpointManager(os.path.abspath(ckpt))
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.init_from={path!r}: no checkpoint found in {ckpt!r}")
  restored = _restore(mngr, step, target)
  logging.info("initialized parameters from %s step %d", ckpt, step)
  return target.replace(params=restored.params)


# --- the main entry points -----------------------------------------------------


def create_state(config, model, optimizer, mesh: Mesh, key) -> TrainState:
  """Initial state, replicated over the mesh."""
  h, w = config.input_hw
  x = jnp.zeros((1, h, w, 3), jnp.float32)
  replicated = NamedSharding(mesh, PartitionSpec())

  @functools.partial(jax.jit, out_shardings=replicated)
  def init(key):
    params = model.init({"params": key}, x, train=False)["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  return init(key)


def parameter_overview(params) -> str:
  """A table of each module's parameter count and kernel shape."""
  lines = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    lines.append(f"{name:48s} {str(tuple(leaf.shape)):22s} {leaf.size:>10,d}")
  total = sum(x.size for x in jax.tree.leaves(params))
  return "\n".join(lines + [f"{'total':48s} {'':22s} {total:>10,d}"])


class _Progress:
  """Logs step, phase, losses, images/s and ETA."""

  def __init__(self, total: int, start: int, batch_size: int):
    self.total, self.batch = total, batch_size
    self.t0, self.s0 = time.time(), start

  def line(self, step: int, phase: str, m: dict) -> str:
    dt = max(time.time() - self.t0, 1e-9)
    rate = (step - self.s0) / dt
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    bar = "#" * int(20 * step / self.total)
    return (
      f"[{bar:20s}] {step}/{self.total} {phase:6s} loss {m['loss']:.4f} "
      f"(E1 {m['e1']:.4f} E2 {m['e2']:.4f}) {rate * self.batch:.1f} img/s ETA {eta_s}"
    )


def _writer(workdir: str):
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter

  return SummaryWriter(os.path.join(workdir, "tensorboard"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the three phases (resumable) and evaluates; returns the final metrics.

  Resume order: a checkpoint in `workdir` → `config.init_from` → scratch. SIGTERM
  saves a checkpoint and returns; a non-finite loss raises `FloatingPointError`
  naming the step range, leaving the last good checkpoint in place.
  """
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    evaluation.write_json_atomic(
      json.loads(config.to_json_best_effort()), os.path.join(workdir, "config.json")
    )
  mesh = Mesh(np.array(jax.devices()), ("data",))
  if config.batch_size % len(jax.devices()):
    raise ValueError(
      f"config.batch_size={config.batch_size} must divide by the {len(jax.devices())} devices"
    )
  skeleton = joints_lib.get_skeleton(config.dataset)
  model = build_model(config)
  bounds = phase_bounds(config)
  total = bounds[-1][2]
  optimizer, schedule = make_optimizer(config, bounds)
  step_key = jax.random.key(config.seed)
  # Parameters are drawn with the RBG generator: XLA:CPU compiles threefry's
  # truncated normals slowly (seconds per initializer, minutes per model), and
  # the init is replicated, so its values do not depend on the device layout.
  init_key = jax.random.key(config.seed, impl="rbg")
  state = create_state(config, model, optimizer, mesh, init_key)

  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  latest = mngr.latest_step()
  if latest is not None:
    state = _restore(mngr, latest, state)
    logging.info("resumed from %s step %d", workdir, latest)
  elif config.init_from:
    state = _init_from(config.init_from, state)
  else:
    logging.info("parameters:\n%s", parameter_overview(state.params))
  start = int(state.step)

  writer = _writer(workdir)
  eval_src = None
  if start < total:
    train_src = _maybe_cache(
      config, data_source(config, config.train_split), config.train_split, workdir
    )
    # The data stream is a pure function of (seed, step), so a resumed run sees
    # exactly the batches the interrupted one would have.
    batches = input_pipeline.make_dataset(
      train_src,
      global_batch_size=config.batch_size,
      shuffle=True,
      seed=config.seed,
      num_epochs=None,
      worker_count=config.worker_count,
      start_batch=start,
      **_pipeline_kwargs(config),
    )
    batch_iter = iter(batches)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    step_fns = {}
    for name, _, _ in bounds:
      fn = step_function(config, model, optimizer, schedule, name)
      step_fns[name] = jax.jit(
        fn,
        in_shardings=(replicated, data, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
      )

    stop = {"term": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))
    progress = _Progress(total, start, config.batch_size)
    pending, last_checked = [], start
    try:
      for step in range(start, total):
        phase = phase_at(bounds, step)
        batch = input_pipeline.to_global_array(next(batch_iter), mesh)
        state, metrics = step_fns[phase](state, batch, step_key)
        pending.append(metrics)
        done = step + 1
        boundary = any(done == end for _, _, end in bounds)
        if done % config.log_every == 0 or boundary or stop["term"] or done == total:
          ms = jax.device_get(pending)
          pending = []
          bad = [last_checked + i + 1 for i, m in enumerate(ms) if not m["ok"]]
          if bad:
            good = mngr.latest_step()
            raise FloatingPointError(
              f"non-finite loss or gradient at steps {bad[0]}..{bad[-1]} (checked {last_checked + 1}..{done});"
              f" parameters of step {bad[0] - 1} kept; last good checkpoint: step {good} in {workdir}"
            )
          last_checked = done
          mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
          logging.info("%s", progress.line(done, phase, mean))
          if writer:
            for k, v in mean.items():
              writer.add_scalar(f"train/{k}", v, done)
        if done % config.checkpoint_every == 0 or boundary or stop["term"]:
          mngr.save(done, args=ocp.args.StandardSave(state))
        if done % config.eval_every == 0 and done != total:
          eval_src = eval_src or eval_source(config, workdir)
          _evaluate(config, model, state.params, mesh, eval_src, workdir, done, writer, skeleton)
        if stop["term"]:
          mngr.wait_until_finished()
          logging.warning("SIGTERM: saved step %d in %s and stopped", done, workdir)
          return {"stopped_at": done}
    finally:
      signal.signal(signal.SIGTERM, previous)
      close = getattr(batch_iter, "close", None)
      if close:
        close()
    mngr.save(total, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
  mrf = None
  if config.spatial_model.enabled:  # after the three phases; skipped when already saved
    mrf = fit_or_load_spatial_model(config, model, state.params, mesh, workdir, total)
  eval_src = eval_src or eval_source(config, workdir)
  result = _evaluate(
    config, model, state.params, mesh, eval_src, workdir, total, writer, skeleton, mrf=mrf
  )
  if writer:
    writer.close()
  return result


def fit_or_load_spatial_model(
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
  skeleton = joints_lib.get_skeleton(config.dataset)
  stride = model.coarse.stride
  hw = spatial_training.heatmap_hw_for(config.input_hw, stride)
  spec = spatial_training.MRFSpec.for_skeleton(skeleton, stride=stride, heatmap_hw=hw)
  steps = int(config.spatial_model.steps)
  save_dir = save_dir or workdir
  record = {
    "cascade_step": step,
    "steps": steps,
    "learning_rate": float(config.spatial_model.learning_rate),
  }
  saved = spatial_training.load(save_dir)  # resumable
  if (
    saved is not None
    and saved.spec == spec
    and all(saved.info.get(k) == v for k, v in record.items())
  ):
    logging.info("spatial model: loaded %s", spatial_training.saved_path(save_dir))
    return saved
  if source is None:
    source = _maybe_cache(
      config, data_source(config, config.train_split), config.train_split, workdir
    )
  batches = input_pipeline.make_dataset(
    source,
    global_batch_size=config.batch_size,
    shuffle=True,
    seed=config.seed + 1,
    num_epochs=None,
    worker_count=config.worker_count,
    **_pipeline_kwargs(config),
  )
  it, losses_seen = iter(batches), []

  def log(i, loss):
    losses_seen.append(loss)
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
    close = getattr(it, "close", None)
    if close:
      close()
  info = {**record, "final_loss": losses_seen[-1] if losses_seen else None}
  mrf = spatial_training.FittedMRF(spec, mrf_params, info)
  if jax.process_index() == 0:
    logging.info("spatial model: saved %s", spatial_training.save(save_dir, mrf))
  return mrf


def _predict_fn(config, model, mesh, mrf):
  """The evaluation's predict function; with `mrf`, it adds the MRF variants."""
  if mrf is None:
    return evaluation.make_predict_fn(model, mesh, coarse_refine=config.eval.coarse_refine)
  return spatial_training.make_predict_fn(model, mesh, mrf, coarse_refine=config.eval.coarse_refine)


def _score(config, model, params, mesh, source, step, skeleton, mrf):
  """Predictions over the eval source and their scores (`evaluation.score`)."""
  predict_fn = _predict_fn(config, model, mesh, mrf)
  preds = evaluation.predict_dataset(predict_fn, params, eval_batches(config, source), mesh)
  result = evaluation.score(
    preds,
    skeleton,
    normalizer=config.eval.normalizer,
    thresholds=tuple(config.eval.thresholds),
    curve_max=config.eval.curve_max,
  )
  result["step"] = step
  return preds, result


def _evaluate(
  config, model, params, mesh, source, workdir, step, writer, skeleton, mrf=None
) -> dict:
  """Scores the model on the eval split; writes eval/<step>.json (and the curves PNG)."""
  preds, result = _score(config, model, params, mesh, source, step, skeleton, mrf)
  logging.info(
    "evaluation at step %d on %s:\n%s", step, config.eval_split, evaluation.format_results(result)
  )
  if jax.process_index() == 0:
    out = os.path.join(workdir, "eval")
    os.makedirs(out, exist_ok=True)
    evaluation.write_json_atomic(result, os.path.join(out, f"{step}.json"))
    if writer:
      for m in (m for m in evaluation.MODEL_KEYS if m in result):
        for t, cols in result[m]["table"].items():
          for col, v in cols.items():
            writer.add_scalar(f"eval/{m}/pck_{t}/{col}", v, step)
  return result


def load_params(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh):
  """The model and the parameters of the newest checkpoint in `workdir`."""
  model = build_model(config)
  optimizer, _ = make_optimizer(config, phase_bounds(config))
  target = create_state(config, model, optimizer, mesh, jax.random.key(0, impl="rbg"))
  mngr = checkpoint_manager(workdir, config.keep_checkpoints)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first")
  return model, _restore(mngr, step, target).params, step


def _predictions_file(
  config, skeleton, preds_image: np.ndarray, out_dir: str, name: str = "predictions.mat"
) -> str:
  """Writes image-frame predictions in the dataset's community format.

  MPII: `predictions.mat`, (N, 16, 2) 1-based (evaluate_predictions, MPII's
  tools). FLIC: `predictions.mat`, (N, 11, 2) in examples.mat's frame, the 4
  joints the model does not predict (hips, eyes) NaN. Others: (N, J, 2) 1-based.
  Rows follow the split's example order.
  """
  from heatpose_jax import prediction_io

  path = os.path.join(out_dir, name)
  if config.dataset == "mpii":
    prediction_io.write_mpii_predictions(path, preds_image)
  elif config.dataset == "flic":
    full = np.full((preds_image.shape[0], len(skeleton.annotated), 2), np.nan)
    full[:, skeleton.model_indices] = preds_image
    prediction_io.write_flic_predictions(path, full)
  else:
    prediction_io.write_predictions(path, preds_image + 1.0, skeleton.num_joints)
  return path


def evaluate_checkpoint(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  split: str = "",
  num_overlays: int = 8,
  spatial_model: bool = True,
) -> dict:
  """Scores the newest checkpoint of `workdir` on `split` (default: config.eval_split).

  Writes into `workdir/eval_<split>/`: results.json, table.txt, pck_curves.png,
  predictions.mat (original image frame, see `_predictions_file`) and
  overlay_<k>.png (predicted skeleton in red, ground truth in green). With
  `spatial_model` and an MRF saved in `workdir` (`spatial_training.save`), the
  MRF variants `coarse_mrf` / `cascade_mrf` are scored too and the cascade+MRF
  estimates go to predictions_mrf.mat.
  """
  if split:
    config = ml_collections.ConfigDict(config.to_dict())
    config.eval_split = split
  split = config.eval_split
  mesh = Mesh(np.array(jax.devices()), ("data",))
  skeleton = joints_lib.get_skeleton(config.dataset)
  model, params, step = load_params(config, workdir, mesh)
  source = eval_source(config, workdir)
  mrf = spatial_training.load(workdir) if spatial_model else None
  if mrf is not None and mrf.info.get("cascade_step") != step:
    logging.warning(
      "the spatial model in %s was fitted on step %s, the checkpoint is step %d: refit it",
      workdir,
      mrf.info.get("cascade_step"),
      step,
    )
  preds, result = _score(config, model, params, mesh, source, step, skeleton, mrf)
  text = evaluation.format_results(result)
  if jax.process_index() == 0:
    out = os.path.join(workdir, f"eval_{split}")
    os.makedirs(out, exist_ok=True)
    evaluation.write_json_atomic(result, os.path.join(out, "results.json"))
    with open(os.path.join(out, "table.txt"), "w") as f:
      f.write(f"{config.dataset} {split}, step {step}\n{text}\n")
    evaluation.plot_curves(
      result, os.path.join(out, "pck_curves.png"), f"{config.dataset} {split}, step {step}"
    )
    order = np.argsort(preds["index"], kind="stable")
    image_xy = evaluation.to_image_frame(preds["cascade"], preds["canvas_to_image"])[order]
    result["predictions_file"] = _predictions_file(config, skeleton, image_xy, out)
    if "cascade_mrf" in preds:
      xy = evaluation.to_image_frame(preds["cascade_mrf"], preds["canvas_to_image"])[order]
      result["predictions_file_mrf"] = _predictions_file(
        config, skeleton, xy, out, name="predictions_mrf.mat"
      )
    kw = _pipeline_kwargs(config)
    for k in range(min(num_overlays, len(preds["index"]))):
      ex = source[k]
      if isinstance(ex["image"], bytes):  # dataset features, not a cached canvas
        ex = input_pipeline.crop_example(ex, **kw)
      gt = ex["joints"] if np.all(ex["joints_valid"]) else None
      over = evaluation.draw_skeletons(ex["image"], preds["cascade"][k], skeleton, gt=gt)
      from PIL import Image

      Image.fromarray(over).save(os.path.join(out, f"overlay_{k}.png"))
  logging.info("%s", text)
  return result
