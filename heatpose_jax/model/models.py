"""The paper's networks: the coarse heat-map model, the crop module, the shared-
weight fine model, their cascade, and the "standard cascade" of Fig. 13.

Shapes: images `(B, H, W, 3)` with values 0–255 (uint8 canvases, or the float
output of the device augmentation), scaled to [0, 1] inside the model, the one
place that does it; coarse heat-maps NHWC
`(B, H/s, W/s, J)` at stride s = the pooling factor; fine heat-maps
`(B, J, Wc, Wc)` in each joint's crop window at stride 1 (see `codec` for the
frames). Every module computes in `dtype` and keeps its parameters in float32.

The regions a profile attributes work to are wrapped in `jax.named_scope("hp_...")`
(conv layers, pooling, pyramid and LCN, upscale-and-add, crops): metadata in each
op's name only, read by `studies/profile.py`; nothing computed depends on them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from heatpose_jax.model import codec, image_ops
from heatpose_jax.model.layers import OUTPUT_INIT, RELU_INIT, conv, max_pool_2x2, upscale

# (kernel size, features) of each conv of one resolution bank, and the convs
# followed by a 2x2 max-pool, in the order they are switched on as the pooling
# factor grows (4x: the first two, 8x: three, 16x: four). Feature counts stay
# the same whatever the pooling, as in the paper's Fig. 9.
BANKS = {
  # FLIC, 320x240: 7 stages = 4 bank convs + a 3-layer 1x1 head (paper §3.1).
  "flic": (((5, 128), (5, 128), (5, 128), (9, 512)), (0, 1, 2, 3)),
  # MPII, 256x256: 11 stages = 8 bank convs + the same head.
  "mpii": (((5, 128),) * 7 + ((9, 512),), (0, 1, 2, 4)),
}

# The crop module reads the first two convs of the first two banks, at these
# strides in input pixels (conv1 runs before the first pool, conv2 after it).
CROP_STRIDES = (1, 2, 2, 4)
# Window origins are multiples of the coarsest crop stride, so every bank's
# window starts on a whole feature pixel and lines up after upscaling.
CROP_ALIGN = 4


def bank_layout(
  variant: str, width: float = 1.0, early_width: float = 0.0
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
  """The coarse bank of `variant` ('flic' or 'mpii') with features × `width`; the
  first two convs (the maps the crop module reads) × `early_width` if it is > 0."""
  if variant not in BANKS:
    raise ValueError(f"unknown model variant {variant!r}; known: {sorted(BANKS)}")
  convs, pools = BANKS[variant]
  scale = [early_width if i < 2 and early_width > 0 else width for i in range(len(convs))]
  return tuple((k, max(1, round(f * w))) for (k, f), w in zip(convs, scale, strict=True)), pools


class CoarseNet(nn.Module):
  """Multi-resolution sliding-window heat-map detector (paper Fig. 2).

  Attributes:
    num_joints: J, heat-maps out.
    bank_convs: (kernel, features) of each bank conv (see `bank_layout`).
    pool_after: bank convs that may be followed by a 2x2 max-pool, in order.
    pool_factor: 4, 8 or 16: pools = log2(pool_factor) of `pool_after`.
    head_features: the 1x1 convs between the merge and the output.
    context_blocks: residual blocks of two 3x3 convs on the merged maps, before
      the head (0: the paper, whose head sees no neighbouring cell). They let the
      model combine evidence across the figure (which way it faces; where the other
      limbs are) after the banks are merged: docs/model.md, "Context blocks and early
      width".
    global_context: image-level features condition the first head layer: the
      merged maps' mean and max over the image, through a small MLP, scale and
      shift that layer's (normalized) output at every cell, FiLM-style. A 1x1 head
      sees one cell; which way the figure faces (and so which of two ankles is the
      left) is a fact about the whole image. Starts as the identity. Not in the paper.
    num_banks: pyramid levels (full, 1/2, 1/4 resolution).
    dropout: 'spatial' (one draw per feature map, the paper's SpatialDropout),
      'standard' (per activation) or 'none'; applied before the first 1x1 conv.
    dropout_rate: the drop probability.
    norm: 'none' (the paper) or 'group': GroupNorm (groups of 8 channels) after
      every bank conv, before its ReLU (the tiny configs: docs/training.md).
    head_norm: GroupNorm (groups of 8) after the head's 1x1 convs too, before
      their ReLU. Without it a third to a half of a 32-wide first head layer dies
      in training (its units never fire again; the quick start's runs) and a
      left/right pair can lose the features that tell its sides apart
      (docs/training.md, "Eleventh round"). Not in the paper.
    lcn: local contrast normalization of each pyramid level.
    dtype: compute dtype; parameters stay float32.
  """

  num_joints: int
  bank_convs: Sequence[tuple[int, int]] = BANKS["flic"][0]
  pool_after: Sequence[int] = BANKS["flic"][1]
  pool_factor: int = 8
  head_features: Sequence[int] = (256, 256)
  context_blocks: int = 0
  global_context: bool = False
  num_banks: int = 3
  dropout: str = "spatial"
  dropout_rate: float = 0.2
  norm: str = "none"
  head_norm: bool = False
  lcn: bool = True
  dtype: jnp.dtype = jnp.float32

  @property
  def stride(self) -> int:
    return self.pool_factor

  def _pools(self) -> set[int]:
    n = int(math.log2(self.pool_factor))
    if 2**n != self.pool_factor or not 2 <= n <= len(self.pool_after):
      raise ValueError(
        f"pool_factor must be a power of two from 4 to {2 ** len(self.pool_after)}, "
        f"got {self.pool_factor}"
      )
    return set(self.pool_after[:n])

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Runs the coarse model.

    Args:
      images: `(B, H, W, 3)`, values 0–255 (any dtype).
      train: enables dropout (needs the 'dropout' rng).

    Returns:
      dict with
        heatmaps: `(B, ceil(H/s), ceil(W/s), J)` float32, s = pool_factor;
        crop_features: the 4 maps the crop module reads, strides CROP_STRIDES:
          bank 0 conv 1 and 2, bank 1 conv 1 and 2, each `(B, H/stride, W/stride, F)`;
        inputs: the LCN-normalized pyramid levels (the standard cascade crops them).
    """
    pools = self._pools()
    if self.norm not in ("none", "group"):
      raise ValueError(f"norm must be 'none' or 'group', got {self.norm!r}")
    with jax.named_scope("hp_lcn_pyramid"):
      levels = image_ops.gaussian_pyramid(images.astype(jnp.float32) / 255.0, self.num_banks)
      if self.lcn:
        levels = [image_ops.local_contrast_normalize(x) for x in levels]
    out_hw = (-(-images.shape[1] // self.stride), -(-images.shape[2] // self.stride))
    merged = None
    crop_features = []
    for b, x in enumerate(levels):
      x = self._bank(b, x.astype(self.dtype), pools, crop_features)
      with jax.named_scope("hp_upscale_add"):
        x = upscale(x, 2**b, out_hw)
        merged = x if merged is None else merged + x
    # Crop features in bank order: bank0 conv0, bank0 conv1, bank1 conv0, bank1 conv1.
    return {
      "heatmaps": self._head(merged, train).astype(jnp.float32),
      "crop_features": tuple(crop_features),
      "inputs": tuple(levels),
    }

  def _bank(self, b: int, x: jax.Array, pools: set[int], crop_features: list) -> jax.Array:
    """Bank `b`'s convs (and pools) on its pyramid level `x` `(B, H/2^b, W/2^b, 3)`;
    appends the maps the crop module reads (convs 0 and 1 of banks 0 and 1) to
    `crop_features`. Parameters `bank{b}_conv{i}` (and `bank{b}_norm{i}`)."""
    for i, (k, f) in enumerate(self.bank_convs):
      with jax.named_scope("hp_conv"):  # the layer: conv, bias or norm, ReLU
        x = nn.relu(self._conv_norm(x, f, k, f"bank{b}_conv{i}", f"bank{b}_norm{i}"))
      if b < 2 and i < 2:
        crop_features.append(x)
      if i in pools:
        x = max_pool_2x2(x)
    return x

  def _conv_norm(
    self, x: jax.Array, f: int, k: int, name: str, norm_name: str, group: bool | None = None
  ) -> jax.Array:
    """A k×k conv `name` of `f` features on NHWC `x`, then GroupNorm `norm_name`
    in groups of 8 channels if `group` (default: `norm` is 'group'), else a conv
    bias; no ReLU."""
    group = self.norm == "group" if group is None else group
    # GroupNorm removes a conv bias: its gradient is rounding noise, which Adam
    # turns into full-size steps (runs then differ with the device layout).
    x = conv(f, k, x.shape[1:3], self.dtype, name, not group)(x)
    if group:
      x = nn.GroupNorm(None, group_size=math.gcd(f, 8), dtype=self.dtype, name=norm_name)(x)
    return x

  def _context(self, x: jax.Array) -> jax.Array:
    """`context_blocks` residual blocks on the merged maps `(B, h, w, F)`, shape kept:
    x ← relu(x + norm(conv(relu(norm(conv(x)))))), convs `context{i}_conv{k}` (3x3, F
    features), norms `context{i}_norm{k}` as the banks' (`norm`)."""
    f = x.shape[-1]
    for i in range(self.context_blocks):
      with jax.named_scope("hp_conv"):
        y = nn.relu(self._conv_norm(x, f, 3, f"context{i}_conv0", f"context{i}_norm0"))
        y = self._conv_norm(y, f, 3, f"context{i}_conv1", f"context{i}_norm1")
        x = nn.relu(x + y)
    return x

  def _global(self, x: jax.Array) -> jax.Array:
    """Image-level features `(B, F)` of the maps `(B, h, w, F)`: their mean and max
    over the image through a Dense + ReLU (`global_dense`)."""
    pooled = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], -1)
    dense = nn.Dense(x.shape[-1], kernel_init=RELU_INIT, dtype=self.dtype, name="global_dense")
    return nn.relu(dense(pooled))

  def _film(self, x: jax.Array, g: jax.Array) -> jax.Array:
    """`x` `(B, h, w, f)` scaled and shifted per image and channel by the image-level
    features `g` `(B, G)` (`global_film`; zero-initialized, so the identity at first)."""
    film = nn.Dense(
      2 * x.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype, name="global_film"
    )
    scale, shift = jnp.split(film(g)[:, None, None], 2, axis=-1)
    return x * (1 + scale) + shift

  def _head(self, x: jax.Array, train: bool) -> jax.Array:
    """The merged banks `(B, h, w, F)` -> context blocks, dropout, the 1x1 convs
    `head{i}` and `out`: heat-maps `(B, h, w, J)` in `dtype`."""
    x = self._context(x)
    if self.dropout == "spatial":
      x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2))(x, deterministic=not train)
    elif self.dropout == "standard":
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    elif self.dropout != "none":
      raise ValueError(f"dropout must be 'spatial', 'standard' or 'none', got {self.dropout!r}")
    with jax.named_scope("hp_conv"):
      g = self._global(x) if self.global_context else None
      for i, f in enumerate(self.head_features):
        x = self._conv_norm(x, f, 1, f"head{i}", f"head_norm{i}", self.head_norm)
        if i == 0 and g is not None:
          x = self._film(x, g)
        x = nn.relu(x)
      return nn.Conv(
        self.num_joints, (1, 1), dtype=self.dtype, kernel_init=OUTPUT_INIT, name="out"
      )(x)


def window_origin(xy: jax.Array, context: int, align: int = CROP_ALIGN) -> jax.Array:
  """Input pixel of window pixel (0, 0) for windows of `context` px around `xy`.

  Args:
    xy: `(..., 2)` input-frame (x, y) window centres.
    context: window side in input pixels (the paper's 36).
    align: origins are rounded to multiples of `align`, so windows at stride
      `align` start on whole feature pixels; the centre moves by ≤ align / 2.

  Returns:
    `(..., 2)` int32 origins: window pixel k is input pixel origin + k.
  """
  return (align * jnp.round((xy - (context - 1) / 2) / align)).astype(jnp.int32)


@jax.named_scope("hp_crop")
def crop_windows(features: jax.Array, origin: jax.Array, stride: int, size: int) -> jax.Array:
  """Crops a window per (example, joint) with `lax.dynamic_slice` under `vmap`.

  Windows reaching past the border read zeros: the map is zero-padded by one
  window on every side, so `dynamic_slice` never clamps a start index. The
  gradient of each crop is added back into `features` at the sampled pixels.

  Args:
    features: `(B, Hf, Wf, C)` map at `stride` input pixels per pixel.
    origin: `(B, J, 2)` int input-frame window origins, multiples of `stride`.
    stride: input pixels per feature pixel.
    size: window side in feature pixels.

  Returns:
    `(B, J, size, size, C)`: element [b, j, r, c] is feature pixel
    (origin[b, j] / stride + (c, r)).
  """
  c = features.shape[-1]
  padded = jnp.pad(features, ((0, 0), (size, size), (size, size), (0, 0)))
  start = origin // stride + size  # (B, J, 2) in padded feature pixels

  def one(fmap, st):
    return jax.lax.dynamic_slice(fmap, (st[1], st[0], 0), (size, size, c))

  return jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, 0))(padded, start)


class FineNet(nn.Module):
  """The fine heat-map model (paper Fig. 7-8): one sub-network whose weights
  every joint shares, then a 1x1 output conv per joint.

  The shared sub-network runs on all B·J windows as one batch (equivalent to
  `vmap` over joints with shared parameters, and one large convolution).

  Attributes:
    num_joints: J.
    bank_convs: (kernel, features) of the convs run on every input bank.
    merge_features: the shared 1x1 conv after the upscale-and-add.
    dtype: compute dtype.
  """

  num_joints: int
  bank_convs: Sequence[tuple[int, int]] = ((7, 64), (5, 128))
  merge_features: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, crops: Sequence[jax.Array]) -> jax.Array:
    """Fine heat-maps from per-joint crops.

    Args:
      crops: banks of windows `(B, J, S_i, S_i, C_i)`; S_0 is the largest and
        divides by every S_i (the lower resolutions are upscaled to S_0).

    Returns:
      `(B, J, S_0, S_0)` float32 fine heat-maps, window frame at stride 1 when
      S_0 is the full-resolution window.
    """
    b, j, size = crops[0].shape[:3]
    merged = None
    for i, crop in enumerate(crops):
      x = crop.reshape(b * j, *crop.shape[2:]).astype(self.dtype)
      with jax.named_scope("hp_conv"):
        for k, (ks, f) in enumerate(self.bank_convs):
          x = nn.relu(conv(f, ks, x.shape[1:3], self.dtype, f"bank{i}_conv{k}")(x))
      with jax.named_scope("hp_upscale_add"):
        x = upscale(x, size // crop.shape[2], (size, size))
        merged = x if merged is None else merged + x
    merge = nn.Conv(
      self.merge_features, (1, 1), dtype=self.dtype, kernel_init=RELU_INIT, name="merge"
    )
    with jax.named_scope("hp_conv"):
      x = nn.relu(merge(merged)).reshape(b, j, size, size, self.merge_features)
      # The last layer is per joint: its own 1x1 conv (weights (J, F), bias (J,)).
      w = self.param("joint_kernel", OUTPUT_INIT, (j, self.merge_features), jnp.float32)
      bias = self.param("joint_bias", nn.initializers.zeros, (j,), jnp.float32)
      out = jnp.einsum("bjhwf,jf->bjhw", x, w.astype(self.dtype))
      out = out + bias.astype(self.dtype)[:, None, None]
    return out.astype(jnp.float32)


def _crops(maps: Sequence[jax.Array], strides: Sequence[int], origin: jax.Array, context: int):
  return [crop_windows(m, origin, s, context // s) for m, s in zip(maps, strides, strict=True)]


@flax.struct.dataclass
class CascadeOutput:
  """What a cascade returns: points in the input frame ((x, y), input pixels,
  0-based pixel centres; `codec` has the frames).

  Attributes:
    coarse_heatmaps: `(B, h, w, J)` NHWC at the coarse codec's stride.
    fine_heatmaps: `(B, J, Wc, Wc)` in each joint's window (Wc = the fine
      codec's `size`, stride 1).
    window_origin: `(B, J, 2)` int32 input pixel of window pixel (0, 0).
    coarse_xy: `(B, J, 2)` the locations refined (the coarse argmax by default).
    xy: `(B, J, 2)` the cascade's estimate.
  """

  coarse_heatmaps: jax.Array
  fine_heatmaps: jax.Array
  window_origin: jax.Array
  coarse_xy: jax.Array
  xy: jax.Array


class CascadeModel(Protocol):
  """The interface training, inference, evaluation and the studies use: any flax
  module with these members can stand behind the cascade (`Cascade` and
  `StandardCascade` are the paper's; docs/design.md, "How to add a model").

  Attributes:
    coarse_codec: encodes the coarse targets and decodes the coarse maps (its
      `stride`: input pixels per heat-map pixel).
    fine_codec: the same for the fine maps (its `size`: the window side).
  """

  coarse_codec: codec.HeatmapCodec
  fine_codec: codec.WindowCodec

  def init(self, rngs, images: jax.Array, *, train: bool) -> dict: ...

  def apply(self, variables, *args, **kwargs): ...

  def coarse_heatmaps(self, images: jax.Array, *, train: bool) -> jax.Array:
    """`(B, h, w, J)` coarse heat-maps of `(B, H, W, 3)` images (values 0–255)."""
    ...

  def __call__(
    self,
    images: jax.Array,
    *,
    train: bool,
    freeze_coarse: bool = False,
    locate: Callable[[jax.Array], jax.Array] | None = None,
    fuse_coarse: bool = False,
  ) -> CascadeOutput:
    """The whole model; `freeze_coarse`: no gradient into the coarse part;
    `locate`: coarse maps `(B, h, w, J)` -> the `(B, J, 2)` locations to refine;
    `fuse_coarse`: decode the fine maps weighted by the coarse maps (`Cascade`)."""
    ...


class Cascade(nn.Module):
  """Coarse model → argmax → crop of its conv features → fine model (Fig. 4).

  Attributes:
    coarse: the coarse model.
    fine: the fine model (its J equals the coarse model's).
    coarse_codec: targets and decoding of the coarse maps; its stride is the
      coarse model's (`make_model` builds both).
    fine_codec: targets and decoding in the windows; its size is the crop
      window side in input pixels (the paper's 36).
    image_patches: crop the LCN image pyramid instead of the coarse model's
      features (the standard cascade of Fig. 13, `StandardCascade`).
  """

  coarse: CoarseNet
  fine: FineNet
  coarse_codec: codec.HeatmapCodec
  fine_codec: codec.WindowCodec
  image_patches: bool = False

  def coarse_heatmaps(self, images: jax.Array, *, train: bool) -> jax.Array:
    """The coarse model alone (phase 1): `(B, h, w, J)` heat-maps."""
    return self.coarse(images, train=train)["heatmaps"]

  def __call__(
    self,
    images: jax.Array,
    *,
    train: bool,
    freeze_coarse: bool = False,
    locate: Callable[[jax.Array], jax.Array] | None = None,
    fuse_coarse: bool = False,
  ) -> CascadeOutput:
    """Runs the cascade.

    Args:
      images: `(B, H, W, 3)`, values 0–255 (any dtype).
      train: dropout on.
      freeze_coarse: phase 2 of the paper: the coarse model runs in inference
        mode and no gradient reaches it, from either loss.
      locate: maps this call's coarse heat-maps `(B, h, w, J)` to the `(B, J, 2)`
        input-frame locations to refine (multi-scale averaging, the spatial
        model's choice); default the coarse argmax.
      fuse_coarse: the refined location is the peak of the fine maps weighted by
        this image's coarse maps in the window (`WindowCodec.decode`'s `prior`),
        so the fine model cannot jump to a limb the coarse model does not see
        there (the paper: the fine maps' peak alone). The maps are unchanged.

    Returns:
      `CascadeOutput`.
    """
    out = self.coarse(images, train=train and not freeze_coarse)
    heatmaps = out["heatmaps"]
    if self.image_patches:  # Parameter-free inputs: no gradient reaches the coarse model.
      maps = jax.lax.stop_gradient(out["inputs"])
      strides = tuple(2**k for k in range(len(maps)))
    else:
      maps, strides = out["crop_features"], CROP_STRIDES
    if freeze_coarse:
      heatmaps, maps = jax.lax.stop_gradient((heatmaps, maps))
    heat = jax.lax.stop_gradient(heatmaps)
    coarse_xy = self.coarse_codec.decode(heat)[0] if locate is None else locate(heat)
    context = self.fine_codec.size
    origin = window_origin(coarse_xy, context)
    fine = self.fine(_crops(maps, strides, origin, context))
    prior = None
    if fuse_coarse:
      prior = codec.window_samples(heat, origin, context, self.coarse_codec.stride)
    xy, _ = self.fine_codec.decode(fine, origin, prior=prior)
    return CascadeOutput(heatmaps, fine, origin, coarse_xy, xy)


class StandardCascade(Cascade):
  """The comparison model of Fig. 13: the fine model sees image patches.

  It crops the LCN-normalized pyramid (strides 1, 2, 4) instead of the coarse
  model's features, gets no gradient into the coarse model (trained greedily),
  and has an extra conv per bank so that its parameter count matches the
  shared-feature fine model (`matched_standard_features`).
  """

  image_patches: bool = True


def fine_param_count(
  num_joints: int,
  in_features: Sequence[int],
  bank_convs: Sequence[tuple[int, int]],
  merge_features: int,
) -> int:
  """Trainable parameters of a FineNet with the given input banks."""
  total = 0
  for c in in_features:
    for k, f in bank_convs:
      total += k * k * c * f + f
      c = f
  last = bank_convs[-1][1]
  total += last * merge_features + merge_features
  return total + num_joints * (merge_features + 1)


def matched_standard_features(
  num_joints: int,
  feature_channels: Sequence[int],
  image_banks: int,
  bank_convs: Sequence[tuple[int, int]],
  merge_features: int,
  extra_kernel: int = 5,
) -> tuple[tuple[int, int], ...]:
  """Bank convs of the standard cascade's fine model: `bank_convs` with an extra
  `extra_kernel` conv inserted before the last one, its width chosen so that the
  parameter count best matches the shared-feature FineNet's.

  Args:
    num_joints: J.
    feature_channels: channels of the shared-feature model's 4 crop inputs.
    image_banks: pyramid levels the standard model crops (3 channels each).
    bank_convs: the shared-feature fine model's bank convs.
    merge_features: both models' merge width.
    extra_kernel: the extra conv's kernel size.
  """
  target = fine_param_count(num_joints, feature_channels, bank_convs, merge_features)

  def layout(width):
    return (*bank_convs[:-1], (extra_kernel, width), bank_convs[-1])

  def count(width):
    return fine_param_count(num_joints, (3,) * image_banks, layout(width), merge_features)

  best = min(range(1, 4096), key=lambda w: abs(count(w) - target))
  return layout(best)


@functools.lru_cache(maxsize=32)
def make_model(
  *,
  num_joints: int,
  variant: str = "flic",
  pool_factor: int = 8,
  width: float = 1.0,
  head_features: Sequence[int] = (256, 256),
  early_width: float = 0.0,
  context_blocks: int = 0,
  global_context: bool = False,
  fine_convs: Sequence[tuple[int, int]] = ((7, 64), (5, 128)),
  fine_merge_features: int = 128,
  context: int = 36,
  sigma_coarse: float = 1.5,
  sigma_fine: float = 1.5,
  dropout: str = "spatial",
  dropout_rate: float = 0.2,
  norm: str = "none",
  head_norm: bool = False,
  standard_cascade: bool = False,
  dtype: jnp.dtype = jnp.float32,
) -> Cascade | StandardCascade:
  """Builds the paper's cascade (or the standard cascade of Fig. 13).

  Equal arguments give the same (immutable) module, so states built for equal
  configs have equal `apply_fn`s and share a cached train step.

  Args:
    num_joints: J.
    variant: coarse bank layout, 'flic' or 'mpii' (`BANKS`).
    pool_factor: 4, 8 or 16.
    width: multiplies every coarse bank's feature count (tiny configs use < 1).
    head_features: the coarse model's 1x1 convs after the merge.
    early_width: the first two bank convs' width, if > 0 (see `bank_layout`).
    context_blocks, global_context: see `CoarseNet`.
    fine_convs: (kernel, features) per fine bank conv.
    fine_merge_features: the fine model's shared 1x1 conv.
    context: crop window side in input pixels.
    sigma_coarse, sigma_fine: the codecs' target σ (heat-map px, input px).
    dropout, dropout_rate, norm, head_norm: see `CoarseNet`.
    standard_cascade: build the image-patch comparison model instead, with its
      extra conv sized to match the fine model's parameter count.
    dtype: compute dtype.
  """
  convs, pools = bank_layout(variant, width, early_width)
  head = dict(
    head_features=tuple(head_features), head_norm=head_norm, global_context=global_context
  )
  kw = dict(context_blocks=context_blocks, dropout=dropout, dropout_rate=dropout_rate, norm=norm)
  coarse = CoarseNet(num_joints, convs, pools, pool_factor, **head, **kw, dtype=dtype)
  fine_convs = tuple(tuple(c) for c in fine_convs)
  heat_codec = codec.HeatmapCodec(coarse.stride, sigma_coarse)
  window_codec = codec.WindowCodec(context, sigma_fine)
  if standard_cascade:
    channels = (convs[0][1], convs[1][1], convs[0][1], convs[1][1])
    std = matched_standard_features(num_joints, channels, 3, fine_convs, fine_merge_features)
    fine = FineNet(num_joints, std, fine_merge_features, dtype=dtype)
    return StandardCascade(coarse, fine, heat_codec, window_codec)
  fine = FineNet(num_joints, fine_convs, fine_merge_features, dtype=dtype)
  return Cascade(coarse, fine, heat_codec, window_codec)
