"""Heat-map codec: Gaussian targets and (sub-pixel) argmax decoding.

Frames (see docs/design.md):
  * input frame: (x, y), 0-based, pixel centres at integers, in the model's
    input canvas;
  * heat-map frame at stride s: map pixel (u, v) covers input pixels
    [s·u, s·u + s) and has its centre at input x = s·u + (s − 1) / 2;
  * crop-window frame: window pixel k is input pixel `origin + k` (stride 1).

Maps handled here are `(..., h, w)`; the coarse network's NHWC output
`(B, h, w, J)` is moved to `(B, J, h, w)` by `coarse_to_maps`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def input_to_heatmap(xy: jax.Array, stride: int) -> jax.Array:
  """Input-frame (x, y) → heat-map-frame (u, v) at `stride` (continuous)."""
  return (xy - (stride - 1) / 2) / stride


def heatmap_to_input(uv: jax.Array, stride: int) -> jax.Array:
  """Heat-map-frame (u, v) at `stride` → input-frame (x, y)."""
  return uv * stride + (stride - 1) / 2


def gaussian_maps(centers: jax.Array, hw: tuple[int, int], sigma: float) -> jax.Array:
  """Unnormalized Gaussians exp(−d² / 2σ²) with peak 1.

  Args:
    centers: `(..., 2)` (x, y) in the map's own pixel frame.
    hw: (h, w) of the maps.
    sigma: standard deviation in map pixels.

  Returns:
    `(..., h, w)` float32.
  """
  h, w = hw
  xs = jnp.arange(w, dtype=jnp.float32)
  ys = jnp.arange(h, dtype=jnp.float32)
  dx = xs - centers[..., 0:1]  # (..., w)
  dy = ys - centers[..., 1:2]  # (..., h)
  gx = jnp.exp(-0.5 * (dx / sigma) ** 2)
  gy = jnp.exp(-0.5 * (dy / sigma) ** 2)
  return gy[..., :, None] * gx[..., None, :]


def coarse_targets(
  joints: jax.Array, valid: jax.Array, hw: tuple[int, int], stride: int, sigma: float
) -> jax.Array:
  """Coarse target heat-maps, NHWC like the network's output.

  Args:
    joints: `(B, J, 2)` input-frame (x, y).
    valid: `(B, J)`; invalid joints get an all-zero map (they are also masked
      out of the loss).
    hw: (h, w) of the heat-map.
    stride: the pooling factor s.
    sigma: Gaussian σ in heat-map pixels (the paper: ≈ 1.5).

  Returns:
    `(B, h, w, J)` float32.
  """
  maps = gaussian_maps(input_to_heatmap(joints, stride), hw, sigma)
  maps = maps * valid[..., None, None].astype(maps.dtype)
  return jnp.moveaxis(maps, 1, -1)


def fine_targets(
  joints: jax.Array, valid: jax.Array, window_origin: jax.Array, window: int, sigma: float
) -> jax.Array:
  """Fine target maps in each joint's crop window.

  Args:
    joints: `(B, J, 2)` input-frame (x, y).
    valid: `(B, J)`.
    window_origin: `(B, J, 2)` input pixel of window pixel (0, 0).
    window: window side in input pixels (stride 1).
    sigma: Gaussian σ in input pixels.

  Returns:
    `(B, J, window, window)` float32; a joint outside its window gives the tail
    of its Gaussian (zero far away), which teaches "not here".
  """
  maps = gaussian_maps(joints - window_origin, (window, window), sigma)
  return maps * valid[..., None, None].astype(maps.dtype)


def coarse_to_maps(heatmaps: jax.Array) -> jax.Array:
  """NHWC `(B, h, w, J)` → `(B, J, h, w)`."""
  return jnp.moveaxis(heatmaps, -1, 1)


def argmax_2d(maps: jax.Array, refine: bool = True) -> tuple[jax.Array, jax.Array]:
  """Location of each map's maximum, optionally refined to sub-pixel precision.

  Refinement fits a parabola to the log of the maximum and its two neighbours
  along each axis, which recovers the exact centre of a sampled Gaussian; the
  step is clipped to ±0.5 px so noisy maps never leave the argmax pixel.

  Args:
    maps: `(..., h, w)`.
    refine: apply the log-parabola refinement.

  Returns:
    xy: `(..., 2)` float32 (x, y) in the map's pixel frame.
    peak: `(...)` the maximum value.
  """
  h, w = maps.shape[-2:]
  flat = maps.reshape(*maps.shape[:-2], h * w).astype(jnp.float32)
  idx = jnp.argmax(flat, axis=-1)
  peak = jnp.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
  y, x = idx // w, idx % w
  xy = jnp.stack([x, y], axis=-1).astype(jnp.float32)
  if not refine:
    return xy, peak

  def at(dx, dy):
    xx = jnp.clip(x + dx, 0, w - 1)
    yy = jnp.clip(y + dy, 0, h - 1)
    return jnp.take_along_axis(flat, (yy * w + xx)[..., None], axis=-1)[..., 0]

  def step(lo, mid, hi, inside):
    # Log-domain parabola vertex; a floor keeps logs finite for non-positive maps.
    floor = 1e-10
    lo, mid, hi = (jnp.log(jnp.maximum(v, floor)) for v in (lo, mid, hi))
    denom = lo - 2 * mid + hi
    d = jnp.where(denom < 0, 0.5 * (lo - hi) / jnp.where(denom < 0, denom, -1.0), 0.0)
    return jnp.where(inside & (peak > floor), jnp.clip(d, -0.5, 0.5), 0.0)

  dx = step(at(-1, 0), peak, at(1, 0), (x > 0) & (x < w - 1))
  dy = step(at(0, -1), peak, at(0, 1), (y > 0) & (y < h - 1))
  return xy + jnp.stack([dx, dy], axis=-1), peak


def decode_coarse(heatmaps: jax.Array, stride: int, refine: bool = True):
  """Coarse NHWC heat-maps `(B, h, w, J)` → input-frame `(B, J, 2)` and peaks `(B, J)`."""
  uv, peak = argmax_2d(coarse_to_maps(heatmaps), refine)
  return heatmap_to_input(uv, stride), peak


def decode_fine(fine_maps: jax.Array, window_origin: jax.Array, refine: bool = True):
  """Fine maps `(B, J, Wc, Wc)` and origins `(B, J, 2)` → input-frame `(B, J, 2)`, peaks."""
  xy, peak = argmax_2d(fine_maps, refine)
  return window_origin + xy, peak
