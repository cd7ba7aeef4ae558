"""Heat-map codecs: Gaussian targets (encode) and sub-pixel argmax (decode) as one unit.

In the style of mmpose's codecs, each codec object holds its geometry (stride or
window size) and its σ, and `encode` / `decode` are exact inverses on a clean
Gaussian (round trip within 0.5 px, tested). The targets of training, the
spatial model's targets and every prediction path use these two objects.

Frames (docs/design.md):
  * input frame: (x, y), 0-based, pixel centres at integers, in the model's
    input canvas;
  * heat-map frame at stride s: map pixel (u, v) covers input pixels
    [s·u, s·u + s) and has its centre at input x = s·u + (s − 1) / 2;
  * crop-window frame: window pixel k is input pixel `origin + k` (stride 1).

Coarse maps are NHWC `(B, h, w, J)` like the network's output; fine maps are
`(B, J, S, S)`, one window per joint.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.scipy.ndimage


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
  dx = jnp.arange(w, dtype=jnp.float32) - centers[..., 0:1]  # (..., w)
  dy = jnp.arange(h, dtype=jnp.float32) - centers[..., 1:2]  # (..., h)
  gx = jnp.exp(-0.5 * (dx / sigma) ** 2)
  gy = jnp.exp(-0.5 * (dy / sigma) ** 2)
  return gy[..., :, None] * gx[..., None, :]


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


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
  """Coarse heat-maps at stride s ↔ input-frame joints.

  Attributes:
    stride: input pixels per heat-map pixel (the coarse model's pooling factor).
    sigma: σ of the target Gaussians in heat-map pixels (the paper: ≈ 1.5).
  """

  stride: int
  sigma: float = 1.5

  def heatmap_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the maps of an `(H, W)` input: ceil(H / s), ceil(W / s)."""
    s = self.stride
    return (-(-int(input_hw[0]) // s), -(-int(input_hw[1]) // s))

  @jax.named_scope("hp_targets")  # the profile's category (studies/profile.py)
  def encode(self, joints: jax.Array, valid: jax.Array, heatmap_hw: tuple[int, int]) -> jax.Array:
    """Target heat-maps, NHWC like the network's output.

    Args:
      joints: `(B, J, 2)` input-frame (x, y).
      valid: `(B, J)`; invalid joints get an all-zero map (they are also masked
        out of the loss).
      heatmap_hw: (h, w) of the maps (`heatmap_hw(input_hw)`).

    Returns:
      `(B, h, w, J)` float32, peak 1 at each valid joint.
    """
    maps = gaussian_maps(input_to_heatmap(joints, self.stride), heatmap_hw, self.sigma)
    maps = maps * valid[..., None, None].astype(maps.dtype)
    return jnp.moveaxis(maps, 1, -1)

  def decode(self, heatmaps: jax.Array, refine: bool = True) -> tuple[jax.Array, jax.Array]:
    """`(B, h, w, J)` maps → input-frame `(B, J, 2)` locations and `(B, J)` peak values."""
    uv, peak = argmax_2d(jnp.moveaxis(heatmaps, -1, 1), refine)
    return heatmap_to_input(uv, self.stride), peak

  def value_at(self, heatmaps: jax.Array, xy: jax.Array) -> jax.Array:
    """`(B, J)` value of each joint's map at the heat-map pixel nearest input `xy` `(B, J, 2)`."""
    b, h, w, j = heatmaps.shape
    uv = jnp.round(input_to_heatmap(xy, self.stride)).astype(jnp.int32)
    u = jnp.clip(uv[..., 0], 0, w - 1)
    v = jnp.clip(uv[..., 1], 0, h - 1)
    return heatmaps[jnp.arange(b)[:, None], v, u, jnp.arange(j)[None, :]]


@dataclasses.dataclass(frozen=True)
class WindowCodec:
  """Fine heat-maps in per-joint crop windows ↔ input-frame joints.

  Attributes:
    size: window side in input pixels (stride 1; the paper's 36).
    sigma: σ of the target Gaussians in input pixels.
  """

  size: int
  sigma: float = 1.5

  @jax.named_scope("hp_targets")
  def encode(self, joints: jax.Array, valid: jax.Array, origin: jax.Array) -> jax.Array:
    """Target maps in each joint's window.

    Args:
      joints: `(B, J, 2)` input-frame (x, y).
      valid: `(B, J)`.
      origin: `(B, J, 2)` input pixel of window pixel (0, 0).

    Returns:
      `(B, J, size, size)` float32; a joint outside its window gives the tail of
      its Gaussian (zero far away), which teaches "not here".
    """
    maps = gaussian_maps(joints - origin, (self.size, self.size), self.sigma)
    return maps * valid[..., None, None].astype(maps.dtype)

  def decode(
    self, maps: jax.Array, origin: jax.Array, refine: bool = True, prior: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """`(B, J, S, S)` maps and `(B, J, 2)` origins → input-frame `(B, J, 2)` and peaks.

    With a `prior` `(B, J, S, S)` (the coarse maps in the window, `window_samples`),
    the decoded map is max(maps, 0) · max(prior, 0): the fine model's peak that the
    coarse model also believes in (`fuse_coarse`); a window where that product is
    zero everywhere decodes `maps` alone.
    """
    if prior is not None:
      fused = jnp.maximum(maps, 0) * jnp.maximum(prior.astype(maps.dtype), 0)
      maps = jnp.where(jnp.max(fused, axis=(-2, -1), keepdims=True) > 0, fused, maps)
    xy, peak = argmax_2d(maps, refine)
    return origin + xy, peak


def window_samples(heatmaps: jax.Array, origin: jax.Array, size: int, stride: int) -> jax.Array:
  """The coarse heat-maps at the pixel centres of each joint's window.

  Args:
    heatmaps: `(B, h, w, J)` at `stride` (`HeatmapCodec`'s frame).
    origin: `(B, J, 2)` input pixel (x, y) of window pixel (0, 0).
    size: window side in input pixels.
    stride: the heat-maps' stride.

  Returns:
    `(B, J, size, size)`: window pixel (r, c) holds joint j's map, bilinearly
    interpolated at input pixel origin + (c, r) (edges clamped).
  """
  ar = jnp.arange(size, dtype=jnp.float32)
  u = input_to_heatmap(origin[..., 0, None, None] + ar[None, None, None, :], stride)
  v = input_to_heatmap(origin[..., 1, None, None] + ar[None, None, :, None], stride)
  return sample_heatmaps(heatmaps, v, u, mode="nearest")


def sample_heatmaps(heatmaps: jax.Array, v: jax.Array, u: jax.Array, *, mode: str) -> jax.Array:
  """Bilinear samples of each joint's map at heat-map-frame points.

  Args:
    heatmaps: `(B, h, w, J)`.
    v, u: continuous heat-map rows and columns, broadcastable to `(B, J, H', W')`.
    mode: outside the map, 'nearest' (the edge's value) or 'constant' (zero).

  Returns:
    `(B, J, H', W')`, the maps' dtype.
  """
  per_joint = jnp.moveaxis(heatmaps, -1, 1)  # (B, J, h, w)
  shape = jnp.broadcast_shapes(per_joint.shape[:2] + (1, 1), v.shape, u.shape)
  v, u = jnp.broadcast_to(v, shape), jnp.broadcast_to(u, shape)

  def one(m, vv, uu):
    return jax.scipy.ndimage.map_coordinates(m, [vv, uu], order=1, mode=mode, cval=0.0)

  return jax.vmap(jax.vmap(one))(per_joint, v, u)
