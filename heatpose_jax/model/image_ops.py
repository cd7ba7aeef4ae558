"""Pure JAX image operations of the coarse model's input stage.

Images are NHWC float arrays `(B, H, W, C)`. Both operations are parameter-free
and differentiable, so they sit inside the model and run on the device.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_PORTABLE = contextvars.ContextVar("heatpose_jax_portable_lowering", default=False)


@contextlib.contextmanager
def portable_lowering():
  """Within it, `cpu_or_default` traces both lowerings (`lax.platform_dependent`):
  for `jax.export` to several platforms at once."""
  token = _PORTABLE.set(True)
  try:
    yield
  finally:
    _PORTABLE.reset(token)


def cpu_or_default(*args, cpu: Callable, default: Callable):
  """`cpu(*args)` when the program is for the CPU, else `default(*args)`; both
  compute the same values (the CPU one is an XLA:CPU-friendly lowering).

  Picked at trace time from `jax.default_backend()`: tracing and compiling only one
  branch saves ≈ 1 s per traced model against `lax.platform_dependent`, which is
  kept for `portable_lowering` (a CPU program jitted onto a GPU-default process gets
  the default lowering: the same values, slower).
  """
  if _PORTABLE.get():
    return jax.lax.platform_dependent(*args, cpu=cpu, default=default)
  return (cpu if jax.default_backend() == "cpu" else default)(*args)


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
  """(size,) normalized 1-D Gaussian taps, centred on `size // 2`."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  k = np.exp(-0.5 * (x / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def _separable_depthwise(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Zero-padded 'same' depthwise convolution of NHWC `x` with taps ⊗ taps."""
  c = x.shape[-1]
  k = jnp.asarray(taps, x.dtype)
  n = taps.shape[0]
  kx = jnp.tile(k.reshape(1, n, 1, 1), (1, 1, 1, c))
  ky = jnp.tile(k.reshape(n, 1, 1, 1), (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  y = jax.lax.conv_general_dilated(
    x, kx, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=c
  )
  return jax.lax.conv_general_dilated(
    y, ky, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=c
  )


def _blur_matrix(n: int, taps: np.ndarray, step: int = 1) -> np.ndarray:
  """`(ceil(n / step), n)` rows of the zero-padded 'same' 1-D blur with `taps`,
  each renormalized to sum 1, keeping every `step`-th output."""
  half = taps.shape[0] // 2
  m = sum(float(w) * np.eye(n, k=t - half) for t, w in enumerate(taps))
  m /= m.sum(axis=1, keepdims=True)
  return m[::step].astype(np.float32)


def _blur_as_conv(x: jax.Array, taps: np.ndarray, step: int) -> jax.Array:
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  y = _separable_depthwise(x, taps) / _separable_depthwise(ones, taps)
  return y[:, ::step, ::step, :]


def _blur_as_matmul(x: jax.Array, taps: np.ndarray, step: int) -> jax.Array:
  mh = jnp.asarray(_blur_matrix(x.shape[1], taps, step), x.dtype)
  mw = jnp.asarray(_blur_matrix(x.shape[2], taps, step), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  y = jnp.einsum("ih,bhwc->biwc", mh, x, precision=hi)
  return jnp.einsum("jw,biwc->bijc", mw, y, precision=hi)


def gaussian_blur(x: jax.Array, taps: np.ndarray, step: int = 1) -> jax.Array:
  """Blur with border renormalization, so edges are not darkened by the zero pad;
  with `step` > 1, only every `step`-th row and column of the result.

  The blur is separable and its border weights too, so on the CPU it runs as two
  small matrix products by banded row-normalized matrices: XLA:CPU computes the
  grouped (depthwise) convolution as a generic loop, which made the pyramid and LCN
  73 % of the tiny coarse model's forward pass (docs/performance.md). Other
  backends keep the convolutions. Both give the same values to float rounding.
  """
  return cpu_or_default(
    x,
    cpu=lambda x: _blur_as_matmul(x, taps, step),
    default=lambda x: _blur_as_conv(x, taps, step),
  )


def gaussian_pyramid(images: jax.Array, levels: int = 3, sigma: float = 1.0) -> list[jax.Array]:
  """Gaussian pyramid: level k is blurred and subsampled by 2**k.

  Args:
    images: `(B, H, W, C)`.
    levels: number of levels, full resolution included.
    sigma: blur before each 2x subsampling, in pixels of the finer level.

  Returns:
    `levels` arrays; level k has shape `(B, ceil(H / 2**k), ceil(W / 2**k), C)`.
    Level-k pixel (u, v) is the blurred value at finer-level pixel (2u, 2v), so
    its centre lies at full-resolution x = 2**k · u (top-left aligned).
  """
  taps = gaussian_kernel_1d(5, sigma)
  out = [images]
  for _ in range(levels - 1):
    out.append(gaussian_blur(out[-1], taps, step=2))
  return out


def local_contrast_normalize(
  x: jax.Array, kernel_size: int = 9, sigma: float = 2.0, eps: float = 1e-4
) -> jax.Array:
  """Subtractive then divisive local contrast normalization (Torch7's LCN).

  The local mean and standard deviation pool a Gaussian window over space and
  all channels. The divisor is max(local std, its image mean), so flat regions
  are not amplified. The same kernel serves every pyramid level (paper §3.1).

  Args:
    x: `(B, H, W, C)` images.
    kernel_size, sigma: the Gaussian window.
    eps: floor of the divisor.

  Returns:
    `(B, H, W, C)`, roughly zero-mean and unit-variance locally.
  """
  taps = gaussian_kernel_1d(kernel_size, sigma)
  mean = jnp.mean(gaussian_blur(x, taps), axis=-1, keepdims=True)
  centred = x - mean
  std = jnp.sqrt(jnp.mean(gaussian_blur(centred**2, taps), axis=-1, keepdims=True))
  floor = jnp.mean(std, axis=(1, 2), keepdims=True)
  return centred / jnp.maximum(jnp.maximum(std, floor), eps)
