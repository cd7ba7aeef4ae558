"""The train state, the training phases, their optimizers and the one jitted train step.

A training phase is data (`Phase`): the parameter groups it updates, its loss
as weights of E1 (coarse heat-maps) and E2 (fine heat-maps), its step count and
its optimizer. The paper's three phases (§4.2) are the configs' default
(`configs/common.py`): 'coarse' trains the coarse model on E1; 'fine' the fine
model on E2 with the coarse model frozen; 'joint' both on E3 = E1 + λ·E2. Each
phase has its own optimizer state (`make_optimizer`): the fine phase starts
with fresh Adam moments, so its bias correction and schedule are those of a
new optimizer.

`make_train_step` returns the one jitted step of a phase (shardings over a 1-D
data `Mesh`, the state donated); augmentation and targets run on the device
inside it. The training loop (`train.train_and_evaluate`), the benchmark and the
studies all use it; nothing else jits a train step. No config is read here
(`from_config.train_step` binds a config's arguments).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax.data import augment
from heatpose_jax.model import codec, inference, losses

# The cascade's parameter groups (top-level keys of its params) a phase can train.
PARAM_GROUPS = ("coarse", "fine")


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase.

  Attributes:
    name: names its optimizer state in the checkpoint and its lines in the logs.
    steps: how many steps it trains (a phase with 0 is skipped).
    train: the parameter groups it updates (of `PARAM_GROUPS`); the others are
      frozen (no gradient flows into a frozen coarse model).
    loss_weights: (w1, w2): the loss is w1·E1 + w2·E2 (`losses.phase_loss`);
      with w2 = 0 only the coarse model runs.
    learning_rate, warmup_steps, weight_decay, grad_clip: its AdamW
      (`make_optimizer`).
  """

  name: str
  steps: int
  train: tuple[str, ...]
  loss_weights: tuple[float, float]
  learning_rate: float
  warmup_steps: int = 0
  weight_decay: float = 0.0
  grad_clip: float = 1.0

  def __post_init__(self):
    if not self.train or not set(self.train) <= set(PARAM_GROUPS):
      raise ValueError(f"phase {self.name!r}: train must name groups of {PARAM_GROUPS}")
    if len(self.loss_weights) != 2 or min(self.loss_weights) < 0 or not any(self.loss_weights):
      raise ValueError(
        f"phase {self.name!r}: loss_weights must be (w1, w2) >= 0, not both 0, "
        f"not {tuple(self.loss_weights)!r}"
      )
    if "fine" in self.train and not self.loss_weights[1]:
      raise ValueError(f"phase {self.name!r} trains the fine model: its E2 weight must be > 0")


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


def phase_params(params, phase: Phase) -> dict:
  """The parameter groups `phase` trains."""
  return {k: params[k] for k in phase.train}


@functools.lru_cache(maxsize=32)
def make_optimizer(phase: Phase) -> optax.GradientTransformation:
  """One phase's AdamW: linear warmup, then cosine decay to 1 % over the phase.

  The learning rate is an injected hyper-parameter, so `learning_rate(state)`
  reads it back; the schedule counts this optimizer's own steps. One object per
  phase (cached): states built for equal phases have equal static parts, so a
  cached train step (`make_train_step`) serves them without tracing again.
  """
  lr, steps = phase.learning_rate, phase.steps
  warm = min(phase.warmup_steps, max(1, steps // 10))
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(steps, warm + 1), lr * 0.01)
  return optax.chain(
    optax.clip_by_global_norm(phase.grad_clip),
    optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=phase.weight_decay),
  )


def learning_rate(opt_state) -> jax.Array:
  """The learning rate of the last update of a `make_optimizer` state."""
  return opt_state[1].hyperparams["learning_rate"]


def _init_state(model, phases: Sequence[Phase], input_hw: tuple[int, int], key) -> TrainState:
  x = jnp.zeros((1, *input_hw, 3), jnp.uint8)
  params = model.init({"params": key}, x, train=False)["params"]
  tx = {p.name: make_optimizer(p) for p in phases}
  opt_state = {p.name: tx[p.name].init(phase_params(params, p)) for p in phases}
  return TrainState(jnp.zeros((), jnp.int32), params, opt_state, model.apply, tx)


def create_state(
  model, phases: Sequence[Phase], input_hw: tuple[int, int], mesh: Mesh, key
) -> TrainState:
  """The initial state (compiled init), replicated over the mesh: the parameters
  and one optimizer state per phase of `phases`.

  Use a key made with `impl='rbg'`: XLA:CPU compiles threefry's truncated
  normals slowly, and the init is replicated, so its values do not depend on
  the device layout.
  """
  return _jitted_init(model, tuple(phases), tuple(input_hw), mesh)(key)


# Cached on the model (a hashable Flax module), the phases and the shapes: runs and
# restores of one model in a process (tests, studies, serving) trace its init once.
@functools.lru_cache(maxsize=16)
def _jitted_init(model, phases: tuple[Phase, ...], input_hw: tuple[int, int], mesh: Mesh):
  init = functools.partial(_init_state, model, phases, input_hw)
  return jax.jit(init, out_shardings=NamedSharding(mesh, PartitionSpec()))


@functools.lru_cache(maxsize=32)
def _state_shapes(model, phases: tuple[Phase, ...], input_hw: tuple[int, int]):
  init = functools.partial(_init_state, model, phases, input_hw)
  return jax.eval_shape(init, jax.random.key(0, impl="rbg"))


@functools.lru_cache(maxsize=32)
def _param_shapes(model, input_hw: tuple[int, int]):
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.uint8)
  return jax.eval_shape(
    lambda k, x: model.init({"params": k}, x, train=False)["params"],
    jax.random.key(0, impl="rbg"),
    x,
  )


def abstract_state(
  model, phases: Sequence[Phase], input_hw: tuple[int, int], mesh: Mesh
) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, by `jax.eval_shape`.

  Nothing is compiled: resume, parameters-only restore and the benchmark all
  start from this.
  """
  shapes = _state_shapes(model, tuple(phases), tuple(input_hw))
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


def abstract_params(model, input_hw: tuple[int, int], mesh: Mesh) -> dict:
  """The parameters' shapes, dtypes and (replicated) shardings alone, by
  `jax.eval_shape` of the model's init: what serving restores into, with no
  optimizer built (`abstract_state(...).params` without the optimizers)."""
  shapes = _param_shapes(model, tuple(input_hw))
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)


@functools.lru_cache(maxsize=32)  # bounded: each entry holds compiled programs
def make_train_step(
  phase: Phase,
  *,
  mesh: Mesh,
  augmentation: augment.Augmentation,
  coarse_codec: codec.HeatmapCodec,
  fine_codec: codec.WindowCodec,
  window_jitter: float = 0.0,
  donate: bool = True,
):
  """The jitted train step of `phase`: `(state, batch, key) -> (state, metrics)`.

  The batch (design.md's layout, uint8 images) is sharded over the mesh's
  'data' axis, the state replicated and donated. Per step: augmentation on the
  device, Gaussian targets from the codecs, forward (the coarse model alone when
  the phase's E2 weight is 0), backward into the groups `phase.train`, the
  phase's optimizer. A step whose loss, gradient or updated parameters are not
  finite leaves the state unchanged and reports `ok = 0`. `window_jitter`: the σ
  (input px) of `jittered_locate`'s offsets to the fine windows (0: none).

  Cached on its (hashable) arguments (equal configs share one compiled step);
  compiled with `inference.compiler_options` (XLA's convolutions on the CPU)."""
  coarse_only, freeze_coarse = not phase.loss_weights[1], "coarse" not in phase.train

  def step(state: TrainState, batch: dict, key: jax.Array):
    rng = jax.random.fold_in(key, state.step)
    aug_rng, drop_rng = jax.random.split(rng)
    batch = augmentation(aug_rng, batch)
    images = batch["image"]
    valid = batch["joints_valid"] * batch["_mask"][:, None]
    hw = coarse_codec.heatmap_hw(images.shape[1:3])
    t_coarse = coarse_codec.encode(batch["joints"], valid, hw)
    fwd = functools.partial(state.apply_fn, train=True, rngs={"dropout": drop_rng})
    loc = jittered_locate(coarse_codec, window_jitter, jax.random.fold_in(rng, 1))

    def loss_fn(trained):
      v = {"params": {**state.params, **trained}}
      if coarse_only:
        heat = fwd(v, images, method="coarse_heatmaps")
        e1 = losses.coarse_loss(heat, t_coarse, valid)
        return e1, {"e1": e1, "e2": jnp.zeros(())}
      out = fwd(v, images, freeze_coarse=freeze_coarse, locate=loc)
      e1 = losses.coarse_loss(out.coarse_heatmaps, t_coarse, valid)
      t_fine = fine_codec.encode(batch["joints"], valid, out.window_origin)
      e2 = losses.fine_loss(out.fine_heatmaps, t_fine, valid)
      return losses.phase_loss(e1, e2, phase.loss_weights), {"e1": e1, "e2": e2}

    trained = phase_params(state.params, phase)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
    new_state, update_metrics = _update(state, phase, trained, grads, loss)
    return new_state, {"loss": loss, **aux, **update_metrics}

  rep, data = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  return jax.jit(
    step,
    in_shardings=(rep, data, rep),
    out_shardings=(rep, rep),
    donate_argnums=(0,) if donate else (),
    compiler_options=inference.compiler_options(mesh.devices.flat[0].platform),
  )


def jittered_locate(
  coarse_codec: codec.HeatmapCodec, sigma: float, key: jax.Array
) -> Callable[[jax.Array], jax.Array] | None:
  """Where training places the fine windows: `(B, h, w, J)` coarse maps → the
  input-frame `(B, J, 2)` coarse estimates plus N(0, σ²) offsets (input px),
  drawn from `key` per example, joint and axis (`Cascade`'s `locate`); None
  (the estimates alone, the paper) when `sigma` is 0. The train step gives it a key
  of its own, so the other draws stay those of a run without jitter."""
  if not sigma:
    return None

  def locate(heat: jax.Array) -> jax.Array:
    xy = coarse_codec.decode(heat)[0]
    return xy + sigma * jax.random.normal(key, xy.shape, xy.dtype)

  return locate


def _update(state: TrainState, phase: Phase, trained, grads, loss: jax.Array):
  """The phase's optimizer step on the groups it trains (`trained`, their `grads`),
  kept only when the loss, the gradient and the updated parameters are finite.

  Returns:
    the next state (parameters and optimizer state unchanged unless finite) and
    its metrics: grad_norm, learning_rate, ok (1.0 when finite, else 0.0).
  """
  with jax.named_scope("hp_optimizer"):  # the profile's category (studies/profile.py)
    updates, opt_state = state.tx[phase.name].update(grads, state.opt_state[phase.name], trained)
    new = optax.apply_updates(trained, updates)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(new))
    keep = functools.partial(jax.tree.map, lambda a, b: jnp.where(ok, a, b))
    new_state = state.replace(
      step=state.step + 1,
      params={**state.params, **keep(new, trained)},
      opt_state={**state.opt_state, phase.name: keep(opt_state, state.opt_state[phase.name])},
    )
  metrics = {
    "grad_norm": grad_norm,
    "learning_rate": learning_rate(opt_state),
    "ok": ok.astype(jnp.float32),
  }
  return new_state, metrics


def parameter_overview(params) -> str:
  """A table of each parameter's shape and size."""
  lines = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    lines.append(f"{name:48s} {str(tuple(leaf.shape)):22s} {leaf.size:>10,d}")
  total = sum(x.size for x in jax.tree.leaves(params))
  return "\n".join(lines + [f"{'total':48s} {'':22s} {total:>10,d}"])
