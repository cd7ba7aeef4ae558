"""The synthetic people's painting: a float canvas, anti-aliased shapes, colours,
textures, and the cluttered background behind the people (`synthetic` draws the
figures with them).

Frames as in `synthetic`: (x, y), 0-based, pixel centres at integers. Every
shape computes its coverage on its own clipped bounding box and blends a paint
into the canvas; every random draw comes from the generator passed in.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import Image

# Drawing primitives. Each computes an anti-aliased coverage `alpha` (h, w) on
# the shape's clipped bounding box and blends a colour into the canvas.


@dataclasses.dataclass
class Canvas:
  """The float image being drawn and the cover mask of the target figure."""

  img: np.ndarray  # (H, W, 3) float32 in [0, 1]
  noise: np.ndarray  # (H, W) float32 in [-1, 1], low-frequency texture
  # (H, W) float32: how much of each pixel is painted over the target figure;
  # None until the target is drawn (drawing under the target hides nothing).
  over: np.ndarray | None = None

  @property
  def hw(self) -> tuple[int, int]:
    return self.img.shape[0], self.img.shape[1]


@dataclasses.dataclass(frozen=True)
class Paint:
  """A colour with an optional texture: 0 plain, 1 stripes, 2 noise."""

  rgb: np.ndarray  # (3,) float32
  texture: int = 0
  amp: float = 0.0
  period: float = 6.0  # stripes: period in pixels
  angle: float = 0.0  # stripes: direction in radians


def _box(x0: float, y0: float, x1: float, y1: float, hw: tuple[int, int]):
  """Integer pixel box [y0, y1) x [x0, x1) covering [x0, x1] x [y0, y1], clipped; None if empty."""
  bx0, by0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
  bx1, by1 = min(math.ceil(x1) + 1, hw[1]), min(math.ceil(y1) + 1, hw[0])
  if bx0 >= bx1 or by0 >= by1:
    return None
  return by0, by1, bx0, bx1


_COORDS = np.arange(8192, dtype=np.float32)  # sliced instead of a new arange per shape


def _grid(box) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates of a box: xs (1, w), ys (h, 1), float32."""
  y0, y1, x0, x1 = box
  return _COORDS[None, x0:x1], _COORDS[y0:y1, None]


def _clamp01(x: np.ndarray) -> np.ndarray:
  """Clips to [0, 1] in place (two ufunc calls: np.clip's wrapper costs more here)."""
  np.maximum(x, 0.0, out=x)
  return np.minimum(x, 1.0, out=x)


def _blend(cv: Canvas, box, alpha: np.ndarray, paint: Paint, shade=None) -> None:
  """Paints `paint` with coverage `alpha` (h, w) and optional shading (h, w)."""
  y0, y1, x0, x1 = box
  factor = None
  if paint.texture == 1:
    xs, ys = _grid(box)
    k = 2 * math.pi / paint.period
    proj = xs * (k * math.cos(paint.angle)) + ys * (k * math.sin(paint.angle))
    factor = 1.0 + paint.amp * np.tanh(3.0 * np.sin(proj))
  elif paint.texture == 2:
    factor = 1.0 + paint.amp * cv.noise[y0:y1, x0:x1]
  if shade is not None:
    factor = shade if factor is None else factor * shade
  colour = paint.rgb if factor is None else factor[..., None] * paint.rgb
  region = cv.img[y0:y1, x0:x1]
  region += alpha[..., None] * (colour - region)
  if cv.over is not None:
    np.maximum(cv.over[y0:y1, x0:x1], alpha, out=cv.over[y0:y1, x0:x1])


def capsule(cv: Canvas, p, q, radius: float, paint: Paint, shading: float = 0.0) -> None:
  """A segment p-q (x, y) thickened by `radius` px; `shading` darkens its rims."""
  px, py, qx, qy = float(p[0]), float(p[1]), float(q[0]), float(q[1])
  r = max(float(radius), 0.5)
  box = _box(
    min(px, qx) - r - 1, min(py, qy) - r - 1, max(px, qx) + r + 1, max(py, qy) + r + 1, cv.hw
  )
  if box is None:
    return
  xs, ys = _grid(box)
  ddx, ddy = qx - px, qy - py
  inv = 1.0 / max(ddx * ddx + ddy * ddy, 1e-6)
  dx, dy = xs - px, ys - py
  t = _clamp01(dx * (ddx * inv) + dy * (ddy * inv))
  dist = np.sqrt((dx - t * ddx) ** 2 + (dy - t * ddy) ** 2)
  alpha = _clamp01((r + 0.5) - dist)
  shade = None
  shading = float(shading)
  if shading:
    # A cylinder lit from the front: darker towards the rims.
    shade = 1.0 - shading * np.minimum(dist * (1.0 / r), 1.0) ** 2
  _blend(cv, box, alpha, paint, shade)


def ellipse(cv: Canvas, centre, a: float, b: float, angle: float, paint: Paint) -> None:
  """An ellipse with semi-axis `a` along direction `angle` (radians from +x), `b` across."""
  cx, cy = float(centre[0]), float(centre[1])
  a, b = max(float(a), 0.5), max(float(b), 0.5)
  ext = max(a, b) + 1
  box = _box(cx - ext, cy - ext, cx + ext, cy + ext, cv.hw)
  if box is None:
    return
  xs, ys = _grid(box)
  cos, sin = math.cos(angle), math.sin(angle)
  dx, dy = xs - cx, ys - cy
  u = dx * (cos / a) + dy * (sin / a)  # normalized: the ellipse is u² + v² = 1
  v = dx * (-sin / b) + dy * (cos / b)
  # Distance to the edge to first order: (f - 1) / |grad f| with f = u² + v².
  grad = 2.0 * np.sqrt((u * (1 / a)) ** 2 + (v * (1 / b)) ** 2)
  dist = (u * u + v * v - 1.0) / np.maximum(grad, 1e-6)
  alpha = _clamp01(0.5 - dist)
  _blend(cv, box, alpha, paint)


def polygon(cv: Canvas, verts, radius: float, paint: Paint) -> None:
  """A convex polygon (V, 2) of (x, y) vertices grown by `radius` px."""
  v = [(float(x), float(y)) for x, y in verts]
  r = float(radius)
  xs_v, ys_v = [x for x, _ in v], [y for _, y in v]
  box = _box(min(xs_v) - r - 1, min(ys_v) - r - 1, max(xs_v) + r + 1, max(ys_v) + r + 1, cv.hw)
  if box is None:
    return
  xs, ys = _grid(box)
  # Outward normals whatever the vertex order (sign of the shoelace area).
  nxt = v[1:] + v[:1]
  area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(v, nxt, strict=True))
  sign = 1.0 if area >= 0 else -1.0
  dist = None
  for (x0, y0), (x1, y1) in zip(v, nxt, strict=True):
    nx, ny = (y1 - y0) * sign, (x0 - x1) * sign
    norm = max(math.hypot(nx, ny), 1e-6)
    nx, ny = nx / norm, ny / norm
    di = xs * nx + (ys * ny - (x0 * nx + y0 * ny))
    dist = di if dist is None else np.maximum(dist, di)
  _blend(cv, box, _clamp01((r + 0.5) - dist), paint)


# ---------------------------------------------------------------------------
# Colours, textures, backgrounds.


def random_paint(rng: np.random.Generator, rgb=None, texture_prob: float = 0.4) -> Paint:
  rgb = rng.random(3).astype(np.float32) if rgb is None else np.asarray(rgb, np.float32)
  if rng.random() >= texture_prob:
    return Paint(rgb)
  return Paint(
    rgb,
    texture=int(rng.integers(1, 3)),
    amp=float(rng.uniform(0.1, 0.35)),
    period=float(rng.uniform(3.0, 12.0)),
    angle=float(rng.uniform(0, np.pi)),
  )


def skin(rng: np.random.Generator) -> np.ndarray:
  light, dark = np.array([0.96, 0.80, 0.68]), np.array([0.33, 0.21, 0.14])
  t = rng.random()
  return ((1 - t) * light + t * dark + rng.normal(0, 0.03, 3)).clip(0, 1).astype(np.float32)


def hair(rng: np.random.Generator) -> np.ndarray:
  palette = np.array(
    [[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.75, 0.60, 0.35], [0.6, 0.6, 0.6], [0.5, 0.2, 0.1]]
  )
  rgb = palette[rng.choice(len(palette), p=[0.45, 0.25, 0.12, 0.1, 0.08])]
  return (rgb + rng.normal(0, 0.03, 3)).clip(0, 1).astype(np.float32)


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
  """(h, w) float32 smooth noise in [-1, 1] with features about `cell` px wide."""
  small = rng.integers(0, 256, (h // cell + 2, w // cell + 2), dtype=np.uint8)
  big = Image.fromarray(small).resize((w, h), Image.BILINEAR)
  return np.asarray(big, np.float32) * (2.0 / 255.0) - 1.0


@functools.lru_cache(maxsize=4)
def noise_table(h: int, w: int) -> np.ndarray:
  """(2h, 2w, 3) float32 standard normal noise, the same in every process."""
  return np.random.default_rng(12345).standard_normal((2 * h, 2 * w, 3), dtype=np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> Canvas:
  """Gradient + coloured noise + stripes + clutter shapes (some limb-like)."""
  # Gradient and coloured noise are smooth: build them on a coarse grid and let
  # PIL upsample the uint8 result (one full-size float op instead of five).
  cell = int(rng.integers(4, 16))
  gh, gw = h // cell + 2, w // cell + 2
  c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
  ang = rng.uniform(0, 2 * math.pi)
  ramp = np.arange(gw, dtype=np.float32)[None, :] * math.cos(ang) + np.arange(gh, dtype=np.float32)[
    :, None
  ] * math.sin(ang)
  ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
  small = c0 + (c1 - c0) * ramp[..., None]
  if rng.random() < 0.7:
    small += rng.uniform(-0.25, 0.25, (gh, gw, 3)).astype(np.float32)
  small = (np.clip(small, 0, 1) * 255).astype(np.uint8)
  big = Image.fromarray(small).resize((w, h), Image.BILINEAR)
  img = np.asarray(big, np.float32) * np.float32(1 / 255)
  cv = Canvas(img=img, noise=_noise_field(rng, h, w, int(rng.integers(2, 12))))
  if rng.random() < 0.3:  # fine texture
    cv.img *= 1.0 + rng.uniform(0.05, 0.25) * cv.noise[..., None]
  if rng.random() < 0.3:
    full = (0, h, 0, w)
    stripes = Paint(
      rng.random(3).astype(np.float32), 1, 0.3, rng.uniform(4, 30), rng.uniform(0, np.pi)
    )
    _blend(cv, full, np.full((h, w), rng.uniform(0.2, 0.7), np.float32), stripes)
  size = min(h, w)
  for _ in range(int(rng.integers(2, 8))):
    clutter_shape(cv, rng, rng.uniform((0, 0), (w, h)), size * rng.uniform(0.05, 0.3))
  np.clip(cv.img, 0.0, 1.0, out=cv.img)
  return cv


def clutter_shape(cv: Canvas, rng: np.random.Generator, centre, size: float) -> None:
  """One random rectangle, ellipse or capsule of about `size` px around `centre`."""
  kind = rng.integers(0, 3)
  limb_like = rng.random() < 0.3
  paint = random_paint(rng, skin(rng) if limb_like else None)
  ang = rng.uniform(0, np.pi)
  if kind == 0:
    hx, hy = size * rng.uniform(0.3, 1.0, 2)
    cos, sin = math.cos(ang), math.sin(ang)
    corners = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]]) @ np.array(
      [[cos, sin], [-sin, cos]]
    )
    polygon(cv, corners + centre, 0.0, paint)
  elif kind == 1:
    ellipse(cv, centre, size * rng.uniform(0.3, 1.0), size * rng.uniform(0.2, 0.8), ang, paint)
  else:
    half = 0.5 * size * np.array([np.cos(ang), np.sin(ang)])
    capsule(cv, centre - half, centre + half, size * rng.uniform(0.08, 0.25), paint, 0.2)
