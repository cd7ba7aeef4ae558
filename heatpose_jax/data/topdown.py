"""Top-down person boxes: the crop of one person from a box, as the COCO-style
builders store it and `Predictor(image, boxes=...)` makes it.

A box (x1, y1, x2, y2) in the design frame ((x, y), 0-based, pixel centres at
integers) becomes the dataset features `center` and `scale` (MPII's convention:
person height / 200 px) of a box with a fixed aspect: the box grows along one
side, about its centre, to width / height = `aspect` (HRNet's `_box2cs`, without
its margin). The crop mode 'box' (`input_pipeline.crop_transform`) then fits
`box_scale` (the margin, default 1.25) times that box's height to the canvas
height: with the canvas's aspect equal to `aspect` the box fills the canvas.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def box_center_scale(box, aspect: float) -> tuple[np.ndarray, np.float32]:
  """`(center (2,) float32, scale)` of a person box widened to `aspect` (w / h).

  Args:
    box: x1, y1, x2, y2 with x2 > x1, y2 > y1 (design frame).
    aspect: width / height of the fixed-aspect box (0.75 for 192×256 crops).

  Returns:
    The box centre and its height / 200 after widening (no margin: that is the
    crop's `box_scale`).
  """
  x1, y1, x2, y2 = (float(v) for v in box)
  w, h = x2 - x1, y2 - y1
  if w > aspect * h:
    h = w / aspect
  center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
  return center, np.float32(h / 200.0)


def zoom_about_centre(canvas_to_image: np.ndarray, canvas_hw, zoom: float) -> np.ndarray:
  """The `(2, 3)` map of the same crop magnified `zoom`× about the canvas centre
  (multi-scale inference: canvas point p at zoom 1 is c + zoom·(p − c) at `zoom`)."""
  m = np.asarray(canvas_to_image, np.float64)
  h, w = canvas_hw
  c = np.array([(w - 1) / 2, (h - 1) / 2])
  a = m[:, :2] / zoom
  return np.concatenate([a, (m[:, :2] @ c - a @ c + m[:, 2])[:, None]], axis=1)


def encode(image: np.ndarray) -> bytes:
  """An `(H, W, 3)` uint8 image as BMP bytes (no compression: fast both ways), so that
  `input_pipeline.decode_and_warp` crops it exactly as training crops its examples."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="BMP")
  return buf.getvalue()
