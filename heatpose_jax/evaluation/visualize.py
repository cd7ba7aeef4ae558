"""Skeleton overlays and contact sheets a person can read.

Images are `(H, W, 3)` uint8; points are (x, y) in that image's pixels, 0-based,
pixel centres at integers. Small canvases (the tiny configs use 64×64) are
enlarged by an integer factor (nearest neighbour, so pixels stay visible) to
at least `min_side` pixels before drawing, and the points scaled with them.
Ground truth is drawn in green, predictions in red (left limbs lighter), and a
legend says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from heatpose_jax.data import joints as joints_lib

PRED = (235, 50, 50)
PRED_LEFT = (255, 150, 60)
GT = (40, 200, 60)
GT_LEFT = (140, 230, 120)


def _is_left(skeleton: joints_lib.Skeleton, a: int, b: int) -> bool:
  return _left(skeleton, a) or _left(skeleton, b)


def _left(skeleton: joints_lib.Skeleton, j: int) -> bool:
  """Model joint j is a left one: the first of a flip pair (`left_shoulder`, `l_hip`)."""
  return skeleton.model_joints[j] in {left for left, _ in skeleton.flip_pairs}


def enlarge(image: np.ndarray, min_side: int) -> tuple[Image.Image, int]:
  """The image as RGB PIL, enlarged by the smallest integer factor reaching `min_side`.

  Small canvases keep their pixels visible (nearest neighbour); photographs
  enlarged 2× are smoothed (bicubic).
  """
  im = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
  factor = max(1, -(-min_side // max(1, min(im.size))))
  if factor > 1:
    resample = Image.Resampling.NEAREST if factor > 2 else Image.Resampling.BICUBIC
    # Pixel (i, j) → the block [k·i, k·i + k): centres map as x ↦ k·x + (k − 1)/2 either way.
    im = im.resize((im.width * factor, im.height * factor), resample)
  return im, factor


def _draw_points(d: ImageDraw.ImageDraw, skeleton, pts, valid, colors, width: int, r: float):
  right, left = colors
  for a, b in skeleton.limb_indices:
    if valid[a] and valid[b]:
      col = left if _is_left(skeleton, a, b) else right
      d.line([tuple(pts[a]), tuple(pts[b])], fill=col, width=width)
  for j, (x, y) in enumerate(pts):
    if valid[j]:
      col = left if _left(skeleton, j) else right
      d.ellipse([x - r, y - r, x + r, y + r], fill=col, outline=(0, 0, 0))


def draw(
  image: np.ndarray,
  pred: np.ndarray | None,
  skeleton: joints_lib.Skeleton,
  *,
  gt: np.ndarray | None = None,
  gt_valid: np.ndarray | None = None,
  scores: np.ndarray | None = None,
  min_side: int = 384,
  legend: bool = True,
  title: str = "",
) -> np.ndarray:
  """An overlay of predicted (red) and ground-truth (green) skeletons.

  Args:
    image: `(H, W, 3)` uint8.
    pred: `(J, 2)` predicted (x, y) in `image` pixels, or None.
    skeleton: gives the limbs and which joints are left.
    gt: `(J, 2)` ground truth, or None; `gt_valid` `(J,)` marks annotated joints.
    scores: `(J,)` in [0, 1]: joints scoring below 0.1 are drawn hollow.
    min_side: enlarge small images to at least this many pixels a side.
    legend: write which colour is which.
    title: a line of text at the top (e.g. the source file's name).

  Returns:
    `(H', W', 3)` uint8, H' = H × the enlargement factor.
  """
  im, k = enlarge(image, min_side)
  d = ImageDraw.Draw(im)
  width = max(2, round(min(im.size) / 160))
  r = width * 1.5

  def up(p):
    return np.asarray(p, np.float64) * k + (k - 1) / 2

  if gt is not None:
    v = np.ones(len(gt), bool) if gt_valid is None else np.asarray(gt_valid) > 0
    _draw_points(d, skeleton, up(gt), v, (GT, GT_LEFT), width, r)
  if pred is not None:
    v = np.ones(len(pred), bool)
    _draw_points(d, skeleton, up(pred), v, (PRED, PRED_LEFT), width, r)
    if scores is not None:
      for j, (x, y) in enumerate(up(pred)):
        if scores[j] < 0.1:
          d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=PRED)
  lines = []
  if title:
    lines.append((title, (255, 255, 255)))
  if legend:
    if pred is not None:
      lines.append(("prediction (left side lighter)", PRED))
    if gt is not None:
      lines.append(("ground truth", GT))
  y = 2
  for text, col in lines:
    box = d.textbbox((4, y), text)
    d.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=(0, 0, 0))
    d.text((4, y), text, fill=col)
    y = box[3] + 3
  return np.asarray(im)


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = 6, pad: int = 4) -> np.ndarray:
  """Tiles (any sizes, uint8 RGB) on a grey grid, `columns` per row."""
  if not tiles:
    raise ValueError("no tiles")
  th = max(t.shape[0] for t in tiles)
  tw = max(t.shape[1] for t in tiles)
  columns = max(1, min(columns, len(tiles)))
  rows = -(-len(tiles) // columns)
  sheet = np.full((rows * (th + pad) + pad, columns * (tw + pad) + pad, 3), 48, np.uint8)
  for i, t in enumerate(tiles):
    r, c = divmod(i, columns)
    y, x = pad + r * (th + pad), pad + c * (tw + pad)
    sheet[y : y + t.shape[0], x : x + t.shape[1]] = t
  return sheet
