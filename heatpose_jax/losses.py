"""The paper's heat-map regression losses (Eq. 1 and 2) with explicit masks.

E = mean over valid (example, joint) pairs of Σ_{x,y} (H'(x, y) − H(x, y))²:
the paper's per-joint sum over pixels, averaged over joints; joints without
ground truth (and padding rows) are masked out instead of regressed to zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_heatmap_mse(pred: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
  """Masked squared error of `(B, J, h, w)` maps with `valid` `(B, J)`.

  Returns:
    scalar float32: Σ over pixels, mean over valid maps (0 if none is valid).
  """
  err = jnp.sum(jnp.square(pred.astype(jnp.float32) - target), axis=(-2, -1))
  valid = valid.astype(jnp.float32)
  return jnp.sum(err * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def coarse_loss(heatmaps: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """E1 on NHWC coarse maps `(B, h, w, J)`."""
  return masked_heatmap_mse(jnp.moveaxis(heatmaps, -1, 1), jnp.moveaxis(targets, -1, 1), valid)


def fine_loss(fine_maps: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """E2 on fine window maps `(B, J, Wc, Wc)`."""
  return masked_heatmap_mse(fine_maps, targets, valid)


def joint_loss(e1: jax.Array, e2: jax.Array, lam: float) -> jax.Array:
  """E3 = E1 + λ·E2 (the paper uses λ = 0.1)."""
  return e1 + lam * e2
