"""Gaussian pyramid and local contrast normalization."""

import jax
import jax.numpy as jnp
import numpy as np

from heatpose_jax.model import image_ops


def test_pyramid_shapes_and_smoothing():
  x = jax.random.uniform(jax.random.key(0), (2, 240, 320, 3))
  levels = image_ops.gaussian_pyramid(x, 3)
  assert [lv.shape for lv in levels] == [(2, 240, 320, 3), (2, 120, 160, 3), (2, 60, 80, 3)]
  # Blurring before subsampling lowers the variance of white noise.
  assert float(levels[1].std()) < 0.6 * float(x.std())
  # A constant image stays constant, borders included (renormalized blur).
  c = image_ops.gaussian_pyramid(jnp.full((1, 31, 17, 3), 0.7), 3)
  for lv in c:
    np.testing.assert_allclose(lv, 0.7, rtol=1e-5)
  assert c[2].shape == (1, 8, 5, 3)


def test_lcn_is_locally_zero_mean_and_contrast_invariant():
  x = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
  y = image_ops.local_contrast_normalize(x)
  assert abs(float(y.mean())) < 0.05
  # Brightness and contrast changes of the input leave the output unchanged.
  y2 = image_ops.local_contrast_normalize(0.3 * x + 0.5)
  np.testing.assert_allclose(y, y2, atol=1e-4)
  # Flat images are not amplified into noise.
  flat = image_ops.local_contrast_normalize(jnp.full((1, 16, 16, 3), 0.5))
  assert np.all(np.isfinite(np.asarray(flat))) and float(jnp.abs(flat).max()) < 1e-3


def test_cpu_blur_lowering_equals_the_depthwise_convolution():
  """The CPU path (banded matrix products) and the other backends' path (grouped
  convolutions) agree in values and gradients, odd sizes and subsampling included."""
  taps = image_ops.gaussian_kernel_1d(9, 2.0)
  for shape, step in [((2, 31, 17, 3), 1), ((1, 64, 64, 3), 2), ((2, 9, 40, 1), 2)]:
    x = jax.random.normal(jax.random.key(sum(shape)), shape)
    fast = image_ops.gaussian_blur(x, taps, step=step)
    ref = image_ops._blur_as_conv(x, taps, step)
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(3), ref.shape)
    g_fast = jax.grad(lambda x, w=w, s=step: jnp.sum(w * image_ops.gaussian_blur(x, taps, s)))(x)
    g_ref = jax.grad(lambda x, w=w, s=step: jnp.sum(w * image_ops._blur_as_conv(x, taps, s)))(x)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5, atol=1e-5)
