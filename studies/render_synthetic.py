"""The synthetic-people renderer (`heatpose_jax.data.synthetic`) seen and timed:
a contact sheet of rendered examples with their labels drawn, and the rendering
speed with and without JPEG encoding (`run`)."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image, ImageDraw

from heatpose_jax.core import fileio
from heatpose_jax.data import synthetic
from heatpose_jax.evaluation import visualize


def draw_skeleton(image: np.ndarray, ex: dict, zoom: int = 1) -> Image.Image:
  """The image (zoomed) with limbs, joints (left red, right blue, invisible hollow),
  the head box (yellow), the torso box (green) and the distractor's joints (grey)."""
  h, w = image.shape[:2]
  im = Image.fromarray(image).resize((w * zoom, h * zoom), Image.NEAREST)
  d = ImageDraw.Draw(im)

  def z(p):
    return tuple(float(c) for c in (np.asarray(p) + 0.5) * zoom - 0.5)

  for box, colour in ((ex["head_box"], (255, 255, 0)), (ex["torso_box"], (0, 255, 0))):
    d.rectangle(z(box[:2]) + z(box[2:]), outline=colour)
  if ex["has_distractor"]:
    for p in ex["distractor_joints"]:
      x, y = z(p)
      d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(160, 160, 160))
  j, valid = ex["joints_full"], ex["joints_valid"]
  for a, b in synthetic.SKELETON.limb_indices:
    d.line(z(j[a]) + z(j[b]), fill=(255, 255, 255), width=1)
  for k, name in enumerate(synthetic.SKELETON.annotated):
    if not valid[k]:
      continue
    colour = (255, 40, 40) if name.startswith("l_") else (40, 80, 255)
    if name[:2] not in ("l_", "r_"):
      colour = (255, 0, 255)
    x, y = z(j[k])
    r = 3
    if ex["joints_visible"][k]:
      d.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    else:
      d.ellipse((x - r, y - r, x + r, y + r), outline=colour)
  return im


def contact_sheet(
  n: int = 16, size: int = 128, seed: int = 0, distractor_prob: float = 0.25
) -> np.ndarray:
  """`(H, W, 3)` uint8: `n` rendered training examples, each as the raw image
  beside the same image with its labels (`draw_skeleton`), 4 pairs a
  row, enlarged to about 256 px."""
  zoom = max(1, 256 // size)
  tiles = []
  for i in range(n):
    rng = synthetic.example_rng(seed, "train", i)
    ex = synthetic.render_example(rng, size, size, distractor=bool(rng.random() < distractor_prob))
    raw = Image.fromarray(ex["image"]).resize((size * zoom, size * zoom), Image.NEAREST)
    tiles += [np.asarray(raw), np.asarray(draw_skeleton(ex["image"], ex, zoom))]
  return visualize.contact_sheet(tiles, columns=8)


def render_rate(n: int, size: int, distractor: bool, encode: bool) -> tuple[float, float]:
  """(examples per wall second, examples per CPU second) rendered, optionally
  JPEG-encoded. CPU time is the fairer figure on a shared machine; the renderer
  is single-threaded."""
  synthetic.render_example(synthetic.example_rng(0, "train", 0), size, size)  # noise table
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(n):
    ex = synthetic.render_example(
      synthetic.example_rng(0, "train", i), size, size, distractor=distractor
    )
    if encode:
      synthetic.encode_jpeg(ex["image"])
  return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def run(
  *,
  preview: str = "",
  benchmark: bool = False,
  n: int = 200,
  size: int = 256,
  seed: int = 0,
  distractor: bool = False,
) -> list[str]:
  """Writes the contact sheet of `n` examples to `preview` (if given) and times
  rendering `n` examples (with `benchmark`); returns the lines to print."""
  if not (preview or benchmark):
    raise ValueError("nothing to do: give a preview path and/or benchmark")
  if n < 1 or size < 16:
    raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
  lines = []
  if preview:
    fileio.save_image(preview, contact_sheet(n, size, seed))
    lines.append(f"wrote {preview}")
  if benchmark:
    for encode in (False, True):
      wall, cpu = render_rate(n, size, distractor, encode)
      what = "render + JPEG q95" if encode else "render"
      lines.append(
        f"{size}x{size} distractor={distractor} {what}: "
        f"{wall:.0f} examples/s wall, {cpu:.0f} examples/CPU-s"
      )
  return lines
