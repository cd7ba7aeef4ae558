"""The layer primitives the networks are built of: 2×2 max-pooling without
select-and-scatter, a k×k conv layer (He init; kernels larger than their map as
patches @ kernel on the CPU), the output layers' init, nearest-neighbour upscaling.
Shapes NHWC."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from heatpose_jax.model import image_ops


@jax.named_scope("hp_pooling")
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2×2 max-pool, stride 2, 'SAME' padding, of NHWC `x`: `nn.max_pool`'s output.

  Written as a reshape and a max: its gradient is a broadcast compare, not XLA's
  select-and-scatter (`nn.max_pool`'s backward), which dominated the backward
  pass on GPUs. Ties share the gradient instead of the first maximum taking it;
  after a ReLU, tied windows are almost always all zero, where both give zero.
  The gradient compares with the maximum saved by the forward pass: JAX's own
  reduce-max gradient divides by the number of elements equal to a recomputed
  maximum, which XLA:CPU, compiling the joint phase's backward pass without
  optimizations (the tests' setting), made 0: NaN gradients once GroupNorm was on.
  """
  b, h, w, c = x.shape
  ph, pw = h % 2, w % 2
  if ph or pw:  # 'SAME' pads the end of an odd side
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  return _window_max(x.reshape(b, (h + ph) // 2, 2, (w + pw) // 2, 2, c))


@jax.custom_vjp
def _window_max(x: jax.Array) -> jax.Array:
  """Max over axes 2 and 4 of `(B, h, 2, w, 2, C)`."""
  return x.max(axis=(2, 4))


def _window_max_fwd(x):
  y = _window_max(x)
  return y, (x, y)


def _window_max_bwd(res, g):
  # The saved maximum, not a recomputed one: ties split the gradient equally and
  # the count is never 0.
  x, y = res
  hit = (x == y[:, :, None, :, None, :]).astype(g.dtype)
  count = jnp.maximum(hit.sum(axis=(2, 4), keepdims=True), 1.0)
  return (g[:, :, None, :, None, :] * hit / count,)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def _patches_conv(lhs, rhs, window_strides, padding, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` of NHWC `lhs` and HWIO `rhs` (stride 1, no dilation,
  no groups, as `nn.Conv` calls it), on the CPU as patches @ kernel.

  XLA:CPU swaps the operands of a convolution whose kernel is larger than its input
  and runs it as a generic loop: the MPII 8× bank-2 conv (9×9 on 8×8) took 0.52 s of
  a 1.21 s batch-1 forward on 2 cores, 30–75× slower than the matrix product. Other
  backends keep the convolution.
  """
  extra = {k: v for k, v in kwargs.items() if v not in (None, 1, (1, 1))}
  if tuple(window_strides) != (1, 1) or set(extra) - {"dimension_numbers", "precision"}:
    raise ValueError(f"_patches_conv takes stride-1 plain convolutions, got {extra}")
  conv = functools.partial(
    jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding, **kwargs
  )

  def as_matmul(x, w):
    # im2col by slices of the padded input, features ordered (kh, kw, cin) as the
    # HWIO kernel's rows; 2.5x faster than `conv_general_dilated_patches` (itself
    # a convolution with an identity kernel) and the same products. kh row slices,
    # then kw column slices of those (not kh·kw slices): a 9×9 kernel compiles in
    # 0.2 s instead of 0.7 s, at the same speed.
    kh, kw, cin, cout = w.shape
    n, h, wd = x.shape[:3]
    pads = (
      jax.lax.padtype_to_pads((h, wd), (kh, kw), (1, 1), padding)
      if isinstance(padding, str)
      else padding
    )
    (top, bottom), (left, right) = pads
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = h + top + bottom - kh + 1, wd + left + right - kw + 1
    rows = jnp.stack([xp[:, i : i + oh] for i in range(kh)], axis=3)  # (n, oh, w', kh, cin)
    cols = jnp.stack([rows[:, :, j : j + ow] for j in range(kw)], axis=4)
    cols = cols.reshape(n, oh, ow, kh * kw * cin)
    return jnp.matmul(cols, w.reshape(kh * kw * cin, cout), precision=kwargs.get("precision"))

  return image_ops.cpu_or_default(lhs, rhs, cpu=as_matmul, default=conv)


# He (Kaiming) normal for every conv followed by a ReLU: it keeps the activations'
# second moment constant with depth. Flax's default LeCun-normal halves it at every
# ReLU layer: the tiny MPII bank's output was 25× smaller than its first conv's and
# the head's 1/50, and training stalled at the mean heat-map (docs/training.md).
RELU_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
OUTPUT_INIT = nn.initializers.normal(1e-3)


def conv(
  features: int, kernel: int, hw: tuple[int, int], dtype, name: str, use_bias: bool = True
) -> nn.Conv:
  """A k×k 'SAME' `nn.Conv` (He init, a ReLU follows) for an NHWC input of spatial
  size `hw`; a kernel larger than the input is computed by `_patches_conv` (same
  parameters, same outputs). No bias before a normalization, which removes it."""
  big = kernel > min(hw)
  return nn.Conv(
    features,
    (kernel, kernel),
    dtype=dtype,
    name=name,
    use_bias=use_bias,
    kernel_init=RELU_INIT,
    conv_general_dilated=_patches_conv if big else None,
  )


def upscale(x: jax.Array, factor: int, hw: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour upscaling of NHWC `x` by `factor`, cropped to `hw`."""
  if factor > 1:
    x = jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
  return x[:, : hw[0], : hw[1]]
