"""The one prediction path: canvases → coarse heat-maps (one or several scales) →
a location per joint (argmax, or a selector such as the MRF spatial model) →
the cascade's refinement.

`predict` is the pure function; `make_predict_fn` jits it over dataset batches
(evaluation during training and offline, the studies), `predictor.Predictor`
over photographs (letterboxed here, `letterbox`), and `experiments.export`
serializes it.

Frames: the canvas is the model input `(H, W)`; points are (x, y) canvas
pixels, 0-based, pixel centres at integers; `canvas_to_image` `(2, 3)` maps
canvas (x, y, 1) to the photograph's pixels. Scores are the (scale-averaged)
coarse heat-map's value at the refined location's heat-map pixel, clipped to
[0, 1]: the targets peak at 1 on a joint, so a score near 1 means a confident
detection and near 0 none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from heatpose_jax.model import codec, losses

# (selector params, averaged coarse heat-maps (B, h, w, J), torso box (B, 4) canvas
# px) -> (B, h, w, J) maps whose argmax is each joint's location.
Selector = Callable[[Any, jax.Array, jax.Array], jax.Array]


# XLA:CPU (jaxlib 0.10) hands every convolution to YNNPACK by default; its kernels
# are 1.0-1.9x slower than XLA's Eigen convolutions on this model's shapes (the fine
# net's 7x7 128 -> 64 on 36x36 windows: 168 vs 90 ms at batch 16; MPII 8x cascade at
# batch 1: 0.64 -> 0.47 s on 2 cores; the CPU study config's train steps 1.13-1.23x
# faster; docs/performance.md). Prediction and the train step compile with
# convolutions left to XLA and matrix products to YNNPACK. Other backends: unchanged.
YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_COMPILER_OPTIONS = {YNN_FUSION_FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
  """Compile options of the prediction path and the train step on `backend`
  (default: JAX's default backend): `CPU_COMPILER_OPTIONS` on the CPU unless
  XLA_FLAGS already chooses the YNNPACK fusions, else None (the backend's defaults)."""
  import os

  backend = backend or jax.default_backend()
  if backend != "cpu" or YNN_FUSION_FLAG in os.environ.get("XLA_FLAGS", ""):
    return None
  return dict(CPU_COMPILER_OPTIONS)


def letterbox(image: np.ndarray, canvas_hw: tuple[int, int], zoom: float = 1.0):
  """Fits a photograph into the canvas (aspect kept, centred, black borders).

  Args:
    image: `(h, w, 3)` uint8.
    canvas_hw: (H, W) of the model input.
    zoom: > 1 magnifies about the image centre (multi-scale inference).

  Returns:
    canvas `(H, W, 3)` uint8 and `canvas_to_image` `(2, 3)` float64.
  """
  h, w = image.shape[:2]
  ch, cw = canvas_hw
  k = min(ch / h, cw / w) * zoom  # canvas px per image px
  # image = centre_i + (canvas − centre_c) / k, pixel centres at integers.
  c2i = np.array(
    [[1 / k, 0, (w - 1) / 2 - (cw - 1) / 2 / k], [0, 1 / k, (h - 1) / 2 - (ch - 1) / 2 / k]]
  )
  # PIL's AFFINE maps output pixel-edge coordinates to input ones: shift by 0.5.
  a, b, c = c2i[0, 0], c2i[0, 1], c2i[0, 2] + 0.5 - 0.5 * (c2i[0, 0] + c2i[0, 1])
  d, e, f = c2i[1, 0], c2i[1, 1], c2i[1, 2] + 0.5 - 0.5 * (c2i[1, 0] + c2i[1, 1])
  canvas = Image.fromarray(image).transform(
    (cw, ch), Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR
  )
  return np.asarray(canvas), c2i


def canvas_to_image_points(xy: np.ndarray, canvas_to_image: np.ndarray) -> np.ndarray:
  """Canvas (x, y) `(..., J, 2)` → image (x, y) with `(..., 2, 3)` affines (or one `(2, 3)`)."""
  m = np.asarray(canvas_to_image, np.float64)
  return np.einsum("...ij,...kj->...ki", m[..., :2], xy) + m[..., None, :, 2]


def resample_heatmaps(heatmaps: jax.Array, zoom: float, stride: int, canvas_hw) -> jax.Array:
  """Heat-maps computed on a canvas zoomed by `zoom` → the zoom-1 canvas's grid.

  Both canvases are centred on the image centre, so canvas point p (zoom 1)
  is zoomed point c + zoom·(p − c), c the canvas centre. Bilinear sampling.

  Args:
    heatmaps: `(B, h, w, J)` of the zoomed canvas.
    zoom: its zoom.
    stride: heat-map stride.
    canvas_hw: (H, W) canvas size.

  Returns:
    `(B, h, w, J)` on the zoom-1 heat-map grid (zero outside the zoomed view).
  """
  h, w = heatmaps.shape[1:3]
  ch, cw = canvas_hw
  x = codec.heatmap_to_input(jnp.arange(w, dtype=jnp.float32), stride)
  y = codec.heatmap_to_input(jnp.arange(h, dtype=jnp.float32), stride)
  xz = codec.input_to_heatmap((cw - 1) / 2 + zoom * (x - (cw - 1) / 2), stride)
  yz = codec.input_to_heatmap((ch - 1) / 2 + zoom * (y - (ch - 1) / 2), stride)
  yy, xx = jnp.meshgrid(yz, xz, indexing="ij")
  return jnp.moveaxis(codec.sample_heatmaps(heatmaps, yy, xx, mode="constant"), 1, -1)


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
  """The scales as floats; ValueError unless all are > 0 and 1.0 is one of them."""
  scales = tuple(float(s) for s in scales)
  if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
    raise ValueError(f"scales must be positive numbers, got {scales}")
  if 1.0 not in scales:
    raise ValueError(f"scales must include 1.0 (the scale the cascade refines), got {scales}")
  return scales


def predict(
  model,
  params,
  canvases: jax.Array,
  *,
  scales: Sequence[float] = (1.0,),
  coarse_refine: bool = False,
  selector: Selector | None = None,
  selector_params: Any = None,
  torso_box: jax.Array | None = None,
  plain: bool = True,
  keep_heatmaps: bool = False,
  flip_perm: Sequence[int] | None = None,
  fuse_coarse: bool = False,
) -> dict[str, jax.Array]:
  """Joints of a batch of canvases (pure: jit it).

  Args:
    model, params: the cascade (`models.Cascade` or `StandardCascade`), its parameters.
    canvases: `(S, B, H, W, 3)` uint8 (values 0–255), one canvas per scale of
      `scales` (letterboxed at each zoom), or `(B, H, W, 3)` when `scales` is (1,).
    scales: zooms; the coarse heat-maps of every scale are resampled to scale 1
      and averaged; the cascade refines at scale 1.
    coarse_refine: sub-pixel refinement of the reported `coarse` estimate (the
      paper's is the plain argmax; where the cascade crops is always refined).
    selector: picks the locations from the averaged heat-maps instead of their
      argmax (`spatial_training.mrf_selector`); adds the `_mrf` outputs.
    selector_params, torso_box: its parameters and `(B, 4)` canvas torso boxes;
      `plain`: also the estimates without it (False: only the `_mrf` ones).
    keep_heatmaps: add the averaged `coarse_heatmaps` `(B, h, w, J)`.
    flip_perm: the flip test (`_Flip`, the skeleton's `flip_permutation`); None: none.
    fuse_coarse: decode the fine maps weighted by the coarse maps (`Cascade`).

  Returns:
    `(B, J, 2)` canvas (x, y): `coarse` (argmax of the averaged coarse maps),
    `cascade` (refined), with a selector `coarse_mrf` and `cascade_mrf`; `(B, J)`
    `scores` (and `scores_mrf`) in [0, 1] (module docstring).
  """
  scales = check_scales(scales)
  canvases = _per_scale(canvases, scales)
  v, base, heat_codec = {"params": params}, scales.index(1.0), model.coarse_codec
  flip = _Flip(flip_perm, canvases.shape[3])
  cascade = functools.partial(model.apply, v, flip.pair_images(canvases[base]), train=False)
  others = _other_scales(model, v, canvases, scales, base, flip)
  averaged = functools.partial(_average, others=others, num_scales=len(scales), fold=flip.fold_maps)
  variants = _variants(
    heat_codec, averaged, bool(others) or flip.on, plain, selector, selector_params, torso_box
  )
  out = {}
  for suffix, locate, maps_of in variants:
    located = None if locate is None else (lambda h, f=locate: flip.pair_xy(f(h)))
    res = cascade(locate=located, fuse_coarse=fuse_coarse)
    heat = averaged(res.coarse_heatmaps)
    out[f"coarse{suffix}"] = heat_codec.decode(maps_of(res.coarse_heatmaps), coarse_refine)[0]
    out[f"cascade{suffix}"] = flip.fold_xy(res.xy)
    score = heat_codec.value_at(heat, flip.fold_xy(res.coarse_xy))
    out[f"scores{suffix}"] = jnp.clip(score, 0.0, 1.0)
    if keep_heatmaps and "coarse_heatmaps" not in out:
      out["coarse_heatmaps"] = heat
  return out


def _per_scale(canvases: jax.Array, scales: tuple[float, ...]) -> jax.Array:
  """`(S, B, H, W, 3)` canvases, one per scale (a `(B, H, W, 3)` batch is scale 1's)."""
  canvases = canvases[None] if canvases.ndim == 4 else canvases
  if canvases.shape[0] != len(scales):
    raise ValueError(f"{canvases.shape[0]} canvases per image for {len(scales)} scales")
  return canvases


class _Flip:
  """The flip test (HRNet's and mmpose's test-time flip): a batch of B canvases
  runs as 2B (the originals, then their mirrors about the canvas centre,
  x → W − 1 − x); `fold_*` bring the mirrored half back (left and right swapped
  by `perm`) and average it with the first. So the coarse maps are averaged, the
  cascade refines the argmax of the average in both canvases, and the two refined
  estimates are averaged. With `perm` None every method is the identity."""

  def __init__(self, perm: Sequence[int] | None, width: int):
    self.on = perm is not None
    self.perm = None if perm is None else np.asarray(perm, np.int32)
    self.width = width

  def _mirror_xy(self, xy: jax.Array) -> jax.Array:  # (B, J, 2), swapped sides
    return jnp.stack([self.width - 1 - xy[..., 0], xy[..., 1]], axis=-1)[:, self.perm]

  def pair_images(self, images: jax.Array) -> jax.Array:  # (B, H, W, 3) -> (2B, ...)
    return jnp.concatenate([images, images[:, :, ::-1]]) if self.on else images

  def pair_xy(self, xy: jax.Array) -> jax.Array:  # (B, J, 2) -> (2B, J, 2)
    return jnp.concatenate([xy, self._mirror_xy(xy)]) if self.on else xy

  def fold_xy(self, xy: jax.Array) -> jax.Array:  # (2B, J, 2) -> (B, J, 2)
    if not self.on:
      return xy
    b = xy.shape[0] // 2
    return (xy[:b] + self._mirror_xy(xy[b:])) / 2

  def fold_maps(self, heat: jax.Array) -> jax.Array:  # (2B, h, w, J) -> (B, h, w, J)
    # The heat-map grid mirrors exactly: cell u's centre s·u + (s − 1)/2 goes to
    # cell w − 1 − u's when the canvas width is w·s.
    if not self.on:
      return heat
    b = heat.shape[0] // 2
    return (heat[:b] + heat[b:, :, ::-1][..., self.perm]) / 2


def _other_scales(
  model, v, canvases: jax.Array, scales: tuple[float, ...], base: int, flip: _Flip
) -> dict:
  """{scale index: `(B, h, w, J)` coarse heat-maps} of every scale but `scales[base]`
  (1.0), flip-averaged (`flip`) and resampled to its grid (`resample_heatmaps`);
  `canvases` `(S, B, H, W, 3)`."""
  stride = model.coarse_codec.stride
  canvas_hw = tuple(canvases.shape[2:4])

  def maps(images):
    return flip.fold_maps(
      model.apply(v, flip.pair_images(images), train=False, method="coarse_heatmaps")
    )

  return {
    i: resample_heatmaps(maps(canvases[i]), s, stride, canvas_hw)
    for i, s in enumerate(scales)
    if i != base
  }


def _average(heat: jax.Array, *, others: dict, num_scales: int, fold=lambda h: h) -> jax.Array:
  """Scale 1's `(B, h, w, J)` heat-maps (`fold`ed: the flip test's pair averaged)
  averaged with `_other_scales`' (the same maps alone)."""
  heat = fold(heat)
  if not others:
    return heat
  return jnp.mean(jnp.stack([others.get(i, heat) for i in range(num_scales)]), axis=0)


def _variants(heat_codec, averaged, averaging, plain, selector, selector_params, torso_box):
  """The estimates `predict` makes: (output suffix, the cascade's `locate`, the maps
  the coarse estimate is the argmax of) for the plain one ('') and the selector's ('_mrf')."""
  variants = []
  if plain:
    # Single scale, no flip, no selector: the cascade's own argmax (one forward pass).
    locate = (lambda h: heat_codec.decode(averaged(h))[0]) if averaging else None
    variants.append(("", locate, averaged))
  if selector is not None:

    def select(heat):
      return selector(selector_params, averaged(heat), torso_box)

    variants.append(("_mrf", lambda h: heat_codec.decode(select(h))[0], select))
  return variants


@functools.lru_cache(maxsize=32)  # bounded: each entry holds compiled programs
def make_predict_fn(
  model,
  mesh: Mesh,
  *,
  coarse_refine: bool = False,
  selector: Selector | None = None,
  keep_heatmaps: bool = False,
  loss_codec: codec.HeatmapCodec | None = None,
  flip_perm: tuple[int, ...] | None = None,
  fuse_coarse: bool = False,
):
  """`predict` jitted over dataset batches: `(params, batch, selector_params=None) -> dict`.

  The batch is design.md's layout (uint8 `image` `(B, H, W, 3)`, `torso_box`,
  `joints`, ...), sharded over the mesh's 'data' axis. Returns `predict`'s
  outputs plus every batch field but the image, replicated so every host sees
  the whole batch; with `loss_codec`, also the coarse loss E1 per example
  against the un-augmented batch (`e1_sum` over its valid joints, `e1_count`);
  with `flip_perm` (the skeleton's `flip_permutation` as a tuple), the flip test;
  `fuse_coarse`: `predict`'s.
  Cached on its (hashable) arguments: evaluations of one model share a trace.
  """

  def fn(params, batch, selector_params=None):
    out = predict(
      model,
      params,
      batch["image"],
      coarse_refine=coarse_refine,
      selector=selector,
      selector_params=selector_params,
      torso_box=batch.get("torso_box"),
      keep_heatmaps=keep_heatmaps or loss_codec is not None,
      flip_perm=flip_perm,
      fuse_coarse=fuse_coarse,
    )
    heat = out["coarse_heatmaps"] if keep_heatmaps else out.pop("coarse_heatmaps", None)
    result = {k: v for k, v in batch.items() if k != "image"}
    result.update(out)
    if loss_codec is not None:
      valid = batch["joints_valid"] * batch["_mask"][:, None].astype(jnp.float32)
      target = loss_codec.encode(batch["joints"], valid, heat.shape[1:3])
      err = losses.coarse_errors(heat, target)  # (B, J): E1's own per-map error
      result["e1_sum"] = jnp.sum(err * valid, axis=-1)
      result["e1_count"] = jnp.sum(valid, axis=-1)
    return result

  return jax.jit(
    fn,
    out_shardings=NamedSharding(mesh, PartitionSpec()),
    compiler_options=compiler_options(mesh.devices.flat[0].platform),
  )
