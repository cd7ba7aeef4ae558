"""On-device data augmentation: one random similarity per example, inside `jit`.

The paper (§3.2) rotates by r ∈ [−20°, +20°], scales by s ∈ [0.5, 1.5] and flips
with probability 0.5. Everything here is pure JAX on batched arrays, so it runs on
the accelerator as part of the train step and the 2-core host only feeds uint8
canvases.

Frames: points are (x, y) canvas pixels, 0-based, pixel centres at integers. For a
canvas of height H and width W the centre is c = ((W − 1)/2, (H − 1)/2) and each
example's map `A: canvas → canvas` is

    x' = c + s · R(θ) · F · (x − c),    F = diag(−1, 1) if flip else I,

stored as a (2, 3) matrix `A = [M | t]` with M = s·R(θ)·F and t = c − M·c, so that
x' = M·x + t. R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]] in (x, y) with y pointing
down, i.e. positive θ turns clockwise on screen.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Small contractions at full f32 precision: GPUs may run f32 dots in TF32 (~1e-3
# relative error, a third of a pixel at x = 300).
_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def make_affine(
  theta: jax.Array, scale: jax.Array, flip: jax.Array, canvas_hw: tuple[int, int]
) -> jax.Array:
  """The canvas → canvas maps x' = c + s·R(θ)·F·(x − c) of the module docstring.

  Args:
    theta: (B,) rotation angles in radians.
    scale: (B,) scale factors (> 1 enlarges the person).
    flip: (B,) bool, mirror x about the canvas centre.
    canvas_hw: (H, W) of the canvas.

  Returns:
    (B, 2, 3) float32 affine matrices [M | t], x' = M·(x, y) + t.
  """
  h, w = canvas_hw
  c = jnp.array([(w - 1) / 2, (h - 1) / 2], jnp.float32)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  sx = jnp.where(flip, -1.0, 1.0) * scale
  # M = s·R·F; F negates the first column of R.
  m = jnp.stack(
    [jnp.stack([cos * sx, -sin * scale], -1), jnp.stack([sin * sx, cos * scale], -1)], -2
  ).astype(jnp.float32)
  t = c - _einsum("bij,j->bi", m, c)
  return jnp.concatenate([m, t[..., None]], axis=-1)


def invert_affine(a: jax.Array) -> jax.Array:
  """Inverse of (..., 2, 3) affine maps [M | t]: [M⁻¹ | −M⁻¹·t]."""
  m, t = a[..., :2], a[..., 2]
  det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
  inv = (
    jnp.stack(
      [jnp.stack([m[..., 1, 1], -m[..., 0, 1]], -1), jnp.stack([-m[..., 1, 0], m[..., 0, 0]], -1)],
      -2,
    )
    / det[..., None, None]
  )
  return jnp.concatenate([inv, -_einsum("...ij,...j->...i", inv, t)[..., None]], axis=-1)


def compose_affine(a: jax.Array, b: jax.Array) -> jax.Array:
  """(..., 2, 3) map a ∘ b (apply b first, then a)."""
  m = _einsum("...ij,...jk->...ik", a[..., :2], b[..., :2])
  t = _einsum("...ij,...j->...i", a[..., :2], b[..., 2]) + a[..., 2]
  return jnp.concatenate([m, t[..., None]], axis=-1)


def apply_affine(a: jax.Array, points: jax.Array) -> jax.Array:
  """Maps (B, N, 2) (x, y) points by (B, 2, 3) affines: (B, N, 2)."""
  return _einsum("bij,bnj->bni", a[..., :2], points) + a[:, None, :, 2]


def sample_affine(
  rng: jax.Array,
  batch_size: int,
  canvas_hw: tuple[int, int],
  *,
  max_rotation_deg: float = 20.0,
  scale_range: tuple[float, float] = (0.5, 1.5),
  flip_prob: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
  """Draws one random similarity per example (paper §3.2), a pure function of `rng`.

  θ ~ U[−max_rotation_deg, max_rotation_deg], s ~ U[scale_range], flip ~ Bernoulli.
  The trainer derives `rng` per step with `jax.random.fold_in(key, step)`.

  Args:
    rng: a PRNG key.
    batch_size: B.
    canvas_hw: (H, W) of the canvas; the maps turn about its centre.
    max_rotation_deg: rotation bound in degrees.
    scale_range: (low, high) scale bounds.
    flip_prob: probability of a horizontal flip.

  Returns:
    A: (B, 2, 3) float32 canvas → canvas maps (module docstring), and
    flip: (B,) bool, which examples are mirrored (their joints swap sides).
  """
  k_rot, k_scale, k_flip = jax.random.split(rng, 3)
  limit = math.radians(max_rotation_deg)
  theta = jax.random.uniform(k_rot, (batch_size,), jnp.float32, -limit, limit)
  scale = jax.random.uniform(k_scale, (batch_size,), jnp.float32, *scale_range)
  flip = jax.random.bernoulli(k_flip, flip_prob, (batch_size,))
  return make_affine(theta, scale, flip, canvas_hw), flip


def warp_images(images: jax.Array, a: jax.Array) -> jax.Array:
  """Warps each image by its own affine: out(x') = image(A⁻¹·x'), bilinear, zeros outside.

  Output pixel (x', y') (integer centres) samples the input at A⁻¹·(x', y') with
  bilinear weights; a neighbour outside the image counts as 0, so the border fades
  over half a pixel and everything beyond is black. The identity samples exactly at
  pixel centres and returns the input values unchanged.

  Four gathers per output pixel and channel, vectorized over the batch; on an
  H100 this ran 1.2-1.5x faster than `jax.scipy.ndimage.map_coordinates` and
  than gathering NHWC pixel rows (docs/input_pipeline.md, "Measurements").

  Args:
    images: (B, H, W, C) uint8 or float images.
    a: (B, 2, 3) canvas → canvas maps.

  Returns:
    (B, H, W, C) float32 warped images, in the input's value range (uint8 stays 0–255).
  """
  b, h, w, c = images.shape
  inv = invert_affine(a.astype(jnp.float32))
  ys, xs = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
  )
  xs, ys = xs.ravel()[None], ys.ravel()[None]  # (1, H·W)
  # Elementwise, not a dot: exact for the identity and never TF32.
  x = inv[:, 0, 0, None] * xs + inv[:, 0, 1, None] * ys + inv[:, 0, 2, None]  # (B, H·W)
  y = inv[:, 1, 0, None] * xs + inv[:, 1, 1, None] * ys + inv[:, 1, 2, None]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  # Channels-first float32 planes: scalar gathers with shared indices and weights
  # ran fastest on an H100 (docs/input_pipeline.md, "Measurements").
  planes = jnp.moveaxis(images, -1, 1).reshape(b, c, h * w).astype(jnp.float32)
  gather = jax.vmap(lambda p, i: p[:, i])  # (C, H·W), (H·W,) -> (C, H·W)

  def corner(xi, yi, weight):
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
    return gather(planes, idx) * jnp.where(inside, weight, 0.0)[:, None]

  out = (
    corner(x0, y0, (1 - fx) * (1 - fy))
    + corner(x0 + 1, y0, fx * (1 - fy))
    + corner(x0, y0 + 1, (1 - fx) * fy)
    + corner(x0 + 1, y0 + 1, fx * fy)
  )  # (B, C, H·W)
  return jnp.moveaxis(out.reshape(b, c, h, w), 1, -1)


def transform_joints(
  joints: jax.Array,
  valid: jax.Array,
  a: jax.Array,
  flip: jax.Array,
  flip_perm: np.ndarray | jax.Array,
  *,
  canvas_hw: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
  """Maps joints by A and relabels mirrored examples.

  When `flip[b]`, model joint j takes the mapped coordinates and mask of joint
  `flip_perm[j]` (a mirrored left wrist looks like a right one). A joint that lands
  outside the canvas, i.e. beyond [−0.5, W − 0.5] × [−0.5, H − 0.5] (the pixel
  edges), becomes invalid; invalid joints hold (0, 0).

  Args:
    joints: (B, J, 2) (x, y) canvas pixels.
    valid: (B, J) mask (bool or float; 1 = usable).
    a: (B, 2, 3) canvas → canvas maps (including the flip, as `sample_affine` makes).
    flip: (B,) bool.
    flip_perm: (J,) int, the skeleton's `flip_permutation`.
    canvas_hw: (H, W) of the canvas.

  Returns:
    joints: (B, J, 2) float32 mapped joints; valid: (B, J), `valid`'s dtype.
  """
  h, w = canvas_hw
  perm = jnp.asarray(flip_perm)
  mapped = apply_affine(a.astype(jnp.float32), joints.astype(jnp.float32))
  mapped = jnp.where(flip[:, None, None], mapped[:, perm], mapped)
  new_valid = jnp.where(flip[:, None], valid[:, perm], valid)
  x, y = mapped[..., 0], mapped[..., 1]
  inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
  keep = inside & (new_valid > 0)
  return jnp.where(keep[..., None], mapped, 0.0), jnp.where(keep, new_valid, 0).astype(valid.dtype)


def transform_boxes(boxes: jax.Array, a: jax.Array) -> jax.Array:
  """Axis-aligned bounding box of each mapped box: (B, 4) x1, y1, x2, y2 → (B, 4)."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes.astype(jnp.float32), -1, 0)
  corners = jnp.stack(
    [
      jnp.stack([x1, y1], -1),
      jnp.stack([x2, y1], -1),
      jnp.stack([x1, y2], -1),
      jnp.stack([x2, y2], -1),
    ],
    1,
  )  # (B, 4, 2)
  mapped = apply_affine(a, corners)
  return jnp.concatenate([mapped.min(1), mapped.max(1)], -1)


@jax.named_scope("hp_augmentation")  # the profile's category (studies/profile.py)
def augment_batch(
  rng: jax.Array,
  batch: dict[str, jax.Array],
  flip_perm: np.ndarray | jax.Array,
  *,
  max_rotation_deg: float = 20.0,
  scale_range: tuple[float, float] = (0.5, 1.5),
  flip_prob: float = 0.5,
) -> dict[str, jax.Array]:
  """Applies one random similarity per example to a batch (design.md's batch layout).

  The same map A (see `sample_affine`) moves `image` (→ float32, 0–255, via
  `warp_images`), `joints` with `joints_valid` / `joints_visible` (relabelled on a
  flip, invalid when outside the canvas), `distractor_joints` if present, and the
  corners of `torso_box` (→ their bounding box). To keep the batch self-consistent
  `head_size` / `torso_size` are multiplied by s and `canvas_to_image` becomes
  canvas_to_image ∘ A⁻¹. Other keys (`index`, `_mask`, `has_distractor`) pass
  through.

  Args:
    rng: a PRNG key, e.g. `jax.random.fold_in(key, step)`.
    batch: dict of (B, ...) arrays; `image` (B, H, W, C) uint8 or float.
    flip_perm: (J,) int, the skeleton's `flip_permutation`.
    max_rotation_deg, scale_range, flip_prob: see `sample_affine`.

  Returns:
    A new dict with the same keys; `image` is float32 in the input's value range.
  """
  images = batch["image"]
  b, h, w, _ = images.shape
  a, flip = sample_affine(
    rng,
    b,
    (h, w),
    max_rotation_deg=max_rotation_deg,
    scale_range=scale_range,
    flip_prob=flip_prob,
  )
  out = dict(batch)
  out["image"] = warp_images(images, a)
  joints, valid = transform_joints(
    batch["joints"], batch["joints_valid"], a, flip, flip_perm, canvas_hw=(h, w)
  )
  out["joints"], out["joints_valid"] = joints, valid
  out.update(_transform_optional(batch, a, flip, flip_perm, valid))
  return out


def _transform_optional(
  batch: dict[str, jax.Array],
  a: jax.Array,
  flip: jax.Array,
  flip_perm: np.ndarray | jax.Array,
  valid: jax.Array,
) -> dict[str, jax.Array]:
  """The optional keys of `batch` moved by A as `augment_batch` describes.

  Args:
    batch: the input batch.
    a: (B, 2, 3) canvas → canvas maps; flip: (B,) bool; flip_perm: (J,) int.
    valid: (B, J) the mapped joints' mask (`transform_joints`).

  Returns:
    The new values of those of `joints_visible`, `distractor_joints`, `torso_box`,
    `head_size`, `torso_size` and `canvas_to_image` that `batch` has.
  """
  out = {}
  if "joints_visible" in batch:
    perm = jnp.asarray(flip_perm)
    visible = jnp.where(flip[:, None], batch["joints_visible"][:, perm], batch["joints_visible"])
    out["joints_visible"] = jnp.where(valid > 0, visible, 0).astype(visible.dtype)
  if "distractor_joints" in batch:
    perm = jnp.asarray(flip_perm)
    mapped = apply_affine(a, batch["distractor_joints"].astype(jnp.float32))
    out["distractor_joints"] = jnp.where(flip[:, None, None], mapped[:, perm], mapped)
  if "torso_box" in batch:
    out["torso_box"] = transform_boxes(batch["torso_box"], a)
  # A is a similarity: lengths scale by s = sqrt(|det M|).
  s = jnp.sqrt(jnp.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]))
  for key in ("head_size", "torso_size"):
    if key in batch:
      out[key] = batch[key] * s
  if "canvas_to_image" in batch:
    out["canvas_to_image"] = compose_affine(batch["canvas_to_image"], invert_affine(a))
  return out


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The paper's augmentation of one dataset, as one value the train step holds.

  Attributes:
    flip_perm: (J,) the skeleton's `flip_permutation` (a tuple: hashable).
    max_rotation_deg, scale_range, flip_prob: see `sample_affine`.
  """

  flip_perm: tuple[int, ...]
  max_rotation_deg: float = 20.0
  scale_range: tuple[float, float] = (0.5, 1.5)
  flip_prob: float = 0.5

  def __call__(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`augment_batch` with these settings."""
    return augment_batch(
      rng,
      batch,
      np.asarray(self.flip_perm),
      max_rotation_deg=self.max_rotation_deg,
      scale_range=tuple(self.scale_range),
      flip_prob=self.flip_prob,
    )
