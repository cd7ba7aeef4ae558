"""The train state, the per-phase optimizers and the one jitted train step.

The paper's three phases (§4.2): 'coarse' trains the coarse model on E1; 'fine'
the fine model on E2 with the coarse model frozen; 'joint' both on E3 = E1 + λ·E2.
Each phase optimizes its own parameter groups (`PHASE_PARAMS`) with its own
optimizer, state and step count (`make_optimizer`): the fine phase starts with
fresh Adam moments, so its bias correction and schedule are those of a new
optimizer.

`make_train_step` returns the one jitted step of a phase (shardings over a 1-D
data `Mesh`, the state donated); augmentation and targets run on the device
inside it. The training loop (`train.train_and_evaluate`), the benchmark and the
studies all use it; nothing else jits a train step. No config is read here
(`from_config.train_step` binds a config's arguments).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import augment, codec, losses

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


def abstract_params(model, input_hw: tuple[int, int], mesh: Mesh) -> dict:
  """The parameters' shapes, dtypes and (replicated) shardings alone, by
  `jax.eval_shape` of the model's init: what serving restores into, with no
  optimizer built (`abstract_state(...).params` without the optimizers)."""
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.uint8)
  shapes = jax.eval_shape(
    lambda k, x: model.init({"params": k}, x, train=False)["params"],
    jax.random.key(0, impl="rbg"),
    x,
  )
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
