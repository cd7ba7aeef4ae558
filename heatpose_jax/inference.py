"""Inference on arbitrary photographs: letterboxing, multi-scale heat-maps, and
the cascade's refinement of their argmax (paper §5: "a query image is run through
the detector at multiple scales").

Frames: the canvas is the model input `(H, W)`; `canvas_to_image` `(2, 3)` maps
canvas (x, y, 1) to the photograph's 0-based pixels (pixel centres at integers).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from heatpose_jax import codec


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
  b, h, w, j = heatmaps.shape
  ch, cw = canvas_hw
  u = jnp.arange(w, dtype=jnp.float32)
  v = jnp.arange(h, dtype=jnp.float32)
  x = codec.heatmap_to_input(u, stride)
  y = codec.heatmap_to_input(v, stride)
  xz = codec.input_to_heatmap((cw - 1) / 2 + zoom * (x - (cw - 1) / 2), stride)
  yz = codec.input_to_heatmap((ch - 1) / 2 + zoom * (y - (ch - 1) / 2), stride)
  yy, xx = jnp.meshgrid(yz, xz, indexing="ij")

  def one(m):  # (h, w)
    return jax.scipy.ndimage.map_coordinates(m, [yy, xx], order=1, mode="constant", cval=0.0)

  maps = jnp.moveaxis(heatmaps, -1, 1).reshape(b * j, h, w)
  out = jax.vmap(one)(maps).reshape(b, j, h, w)
  return jnp.moveaxis(out, 1, -1)


def make_predictor(model, canvas_hw: tuple[int, int], scales: Sequence[float] = (1.0,)):
  """A jitted `(params, canvases (S, B, H, W, 3) uint8) -> dict` for `scales`.

  The coarse heat-maps of every scale are resampled to scale 1 and averaged;
  the cascade then refines the averaged argmax at scale 1.

  Returns dict: `xy` `(B, J, 2)` canvas frame (scale 1), `coarse_xy`, `score`
  `(B, J)` (the averaged heat-map's peak).
  """
  stride = model.coarse.stride

  @jax.jit
  def predict(params, canvases):
    v = {"params": params}
    maps = []
    for i, s in enumerate(scales):
      x = canvases[i].astype(jnp.float32) / 255.0
      heat = model.apply(v, x, train=False, method=model.coarse_heatmaps)
      maps.append(heat if s == 1.0 else resample_heatmaps(heat, s, stride, canvas_hw))
    heat = jnp.mean(jnp.stack(maps), axis=0)
    coarse_xy, peak = codec.decode_coarse(heat, stride)
    base = scales.index(1.0)
    out = model.apply(
      v, canvases[base].astype(jnp.float32) / 255.0, train=False, coarse_xy=coarse_xy
    )
    return {"xy": out["xy"], "coarse_xy": coarse_xy, "score": peak}

  if 1.0 not in scales:
    raise ValueError(f"scales must include 1.0 (the refined scale), got {tuple(scales)}")
  return predict


def predict_image(
  predict_fn, params, image: np.ndarray, canvas_hw, scales: Sequence[float] = (1.0,)
):
  """Joints of one photograph `(h, w, 3)` uint8 → `(J, 2)` image (x, y), `(J,)` scores."""
  canvases, c2i = [], None
  for s in scales:
    canvas, m = letterbox(image, canvas_hw, s)
    canvases.append(canvas[None])
    if s == 1.0:
      c2i = m
  out = jax.device_get(predict_fn(params, np.stack(canvases)))
  xy = out["xy"][0]
  image_xy = xy @ c2i[:, :2].T + c2i[:, 2]
  return image_xy, out["score"][0]
