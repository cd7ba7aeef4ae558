"""The paper's heat-map regression losses (Eq. 1 and 2) with explicit masks.

E = mean over valid (example, joint) pairs of Σ_{x,y} (H'(x, y) − H(x, y))²:
the paper's per-joint sum over pixels, averaged over joints; joints without
ground truth (and padding rows) are masked out instead of regressed to zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def map_errors(pred: jax.Array, target: jax.Array, axes=(-2, -1)) -> jax.Array:
  """The per-map error the losses average: Σ over the pixel `axes` of (pred − target)²
  in float32. `(B, J, h, w)` maps -> `(B, J)`; the one definition that training
  (E1, E2) and evaluation (validation E1, `inference.make_predict_fn`) share."""
  return jnp.sum(jnp.square(pred.astype(jnp.float32) - target), axis=axes)


def masked_mean(err: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean of `(B, J)` errors over the valid maps (0 if none is valid)."""
  valid = valid.astype(jnp.float32)
  return jnp.sum(err * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def coarse_errors(heatmaps: jax.Array, targets: jax.Array) -> jax.Array:
  """`map_errors` of NHWC coarse maps `(B, h, w, J)` -> `(B, J)`."""
  return map_errors(heatmaps, targets, axes=(1, 2))


def coarse_loss(heatmaps: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """E1 on NHWC coarse maps `(B, h, w, J)`, valid `(B, J)`."""
  return masked_mean(coarse_errors(heatmaps, targets), valid)


def fine_loss(fine_maps: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """E2 on fine window maps `(B, J, Wc, Wc)`, valid `(B, J)`."""
  return masked_mean(map_errors(fine_maps, targets), valid)


def phase_loss(e1: jax.Array, e2: jax.Array, weights: tuple[float, float]) -> jax.Array:
  """A phase's loss w1·E1 + w2·E2 (the paper's E3 = E1 + λ·E2 with λ = 0.1 is
  weights (1, 0.1)). A zero weight drops its term, so a NaN there cannot leak in."""
  terms = [w * e for w, e in zip(weights, (e1, e2), strict=True) if w]
  return sum(terms[1:], terms[0])
