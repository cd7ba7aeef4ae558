"""Procedural synthetic people: articulated figures with known joints (docs/synthetic.md).

Each example is a cluttered background with one *target* figure (capsule limbs,
a convex torso, an elliptic head with a face when seen from the front), optional
occluders and an optional second *distractor* figure. Every shape is drawn with
vectorized numpy on its own bounding box, with a one-pixel anti-aliased edge.

Frames: points are (x, y), x the column and y the row, 0-based, pixel centres at
integers (pixel (0, 0) covers [-0.5, 0.5]²). Joints are in the annotated order of
`joints.SKELETONS['synthetic']` (MPII's order without pelvis and thorax):
r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle, upper_neck, head_top, r_wrist,
r_elbow, r_shoulder, l_shoulder, l_elbow, l_wrist. "Right" is the figure's own
right: on the image's left when the figure faces the camera (it then has a face),
on the image's right when it is seen from the back (no face, hair only).

Determinism: `render_example` draws everything from the generator it is given;
`example_rng(seed, split, index)` makes one per example, so an example does not
depend on which others were rendered. Label noise is drawn last, so the image and
the clean joints do not depend on `label_noise`.

`python -m experiments.render_synthetic --preview=sheet.png` writes a contact
sheet with the labels drawn, `--benchmark` times the renderer.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageFilter

from heatpose_jax.data import joints as joints_lib
from heatpose_jax.data import synthetic_paint as paint

SKELETON = joints_lib.SKELETONS["synthetic"]
NUM_JOINTS = len(SKELETON.annotated)  # 14
_J = {name: i for i, name in enumerate(SKELETON.annotated)}

# Body proportions in units of stature (standing head top to ankle = 1.0).
_SPINE = 0.30  # pelvis centre -> thorax (shoulder line centre)
_SHOULDER_HALF = 0.11
_HIP_HALF = 0.08
_HIP_DROP = 0.02  # hip joints sit slightly below the pelvis centre
_NECK = 0.07  # thorax -> upper_neck
_HEAD = 0.13  # upper_neck -> head_top
_UPPER_ARM, _FOREARM, _HAND = 0.17, 0.145, 0.03
_THIGH, _SHIN, _FOOT = 0.24, 0.235, 0.06
# Capsule radii.
_R_UPPER_ARM, _R_FOREARM, _R_HAND = 0.032, 0.026, 0.03
_R_THIGH, _R_SHIN, _R_FOOT, _R_NECK = 0.05, 0.037, 0.024, 0.03
# A standing figure from the top of the head to the soles.
_STATURE_EXTENT = 1.05

SPLIT_CODES = {"train": 0, "test": 1}


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of one example: a pure function of (seed, split, index)."""
  if split not in SPLIT_CODES:
    raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
  return np.random.default_rng([seed, SPLIT_CODES[split], index])


# ---------------------------------------------------------------------------
# Figures.


def _dir(theta: float) -> np.ndarray:
  """(2,) unit vector at angle theta from straight down (+y), positive towards +x."""
  return np.array((math.sin(theta), math.cos(theta)))


@dataclasses.dataclass(frozen=True)
class _Figure:
  """A posed figure in image pixels."""

  joints: np.ndarray  # (14, 2) (x, y) pixels, annotated order
  points: dict  # extra (x, y) points: thorax, pelvis, hand and foot ends
  torso: np.ndarray  # (4, 2) convex torso polygon
  head: tuple  # (centre (2,), semi-axis along head, across, angle from +x)
  px: float  # pixels per stature unit
  front: bool  # facing the camera (has a face)


def _sample_pose(rng: np.random.Generator) -> tuple[np.ndarray, dict, np.ndarray, tuple, bool]:
  """A random pose in stature units, pelvis at the origin, y down.

  Joint-angle limits (degrees): torso lean N(0, 8) within ±25; neck and head tilt
  N(0, 10) each within ±30; shoulder abduction -15..175 (mostly arms down); elbow
  bend -90..150; hip abduction -12..80 (mostly < 35); knee bend 0..110 either way
  in the image plane; limbs foreshortened to 60-100 % at times; body turn narrows
  the shoulders and hips to 55-100 %.
  """
  rad = np.deg2rad
  lean = rad(np.clip(rng.normal(0, 8), -25, 25))
  turn = rng.uniform(0.55, 1.0)

  thorax = -_dir(lean) * _SPINE
  pelvis = np.zeros(2)
  neck_ang = lean + rad(np.clip(rng.normal(0, 10), -30, 30))
  head_ang = neck_ang + rad(np.clip(rng.normal(0, 10), -30, 30))
  upper_neck = thorax - _dir(neck_ang) * _NECK
  head_top = upper_neck - _dir(head_ang) * _HEAD

  j = np.zeros((NUM_JOINTS, 2))
  j[_J["upper_neck"]], j[_J["head_top"]] = upper_neck, head_top
  points = {"thorax": thorax, "pelvis": pelvis}
  _add_limbs(rng, j, points, lean, turn)
  torso = _torso_polygon(j, lean, turn)
  head = (upper_neck - _dir(head_ang) * 0.55 * _HEAD, 0.45 * _HEAD, 0.36 * _HEAD, head_ang)
  front = rng.random() < 0.7
  return j, points, torso, head, front


def _sample_limb_angles(rng: np.random.Generator) -> tuple[tuple, tuple]:
  """One side's limb angles (radians, `_sample_pose`'s limits).

  Returns:
    arm: (shoulder abduction, elbow bend, (2,) upper arm and forearm foreshortening);
    leg: (hip abduction, knee bend signed either way, thigh foreshortening).
  """
  rad = np.deg2rad
  u = rng.random()
  abduct = (
    rng.uniform(-15, 60) if u < 0.55 else rng.uniform(60, 120) if u < 0.8 else rng.uniform(120, 175)
  )
  bend = rng.uniform(-90, 150) if rng.random() < 0.6 else rng.uniform(-10, 20)
  short = rng.uniform(0.6, 1.0, 2) if rng.random() < 0.4 else np.ones(2)
  arm = (rad(abduct), rad(bend), short)
  hip = rng.uniform(-12, 35) if rng.random() < 0.85 else rng.uniform(35, 80)
  knee = rng.uniform(0, 20) if rng.random() < 0.6 else rng.uniform(20, 110)
  leg = (
    rad(hip),
    rad(knee) * rng.choice([-1.0, 1.0]),
    rng.uniform(0.6, 1.0) if rng.random() < 0.25 else 1.0,
  )
  return arm, leg


def _add_limbs(rng: np.random.Generator, j: np.ndarray, points: dict, lean, turn) -> None:
  """Writes both sides' arm and leg joints into `j` (14, 2) and the hand and toe
  ends into `points` (stature units, y down); a symmetric pose (30 %) gives the
  right side the left side's angles."""
  rad = np.deg2rad
  down, perp = _dir(lean), _dir(lean + np.pi / 2)  # perp: the figure's left
  thorax, pelvis = points["thorax"], points["pelvis"]
  symmetric = rng.random() < 0.3
  arm = leg = None
  for side, sign in (("l", 1.0), ("r", -1.0)):
    if arm is None or not symmetric:
      arm, leg = _sample_limb_angles(rng)
    abduct, bend, short = arm
    shoulder = thorax + sign * perp * _SHOULDER_HALF * turn
    upper_ang = lean + sign * abduct
    fore_ang = upper_ang - sign * bend
    elbow = shoulder + _dir(upper_ang) * _UPPER_ARM * short[0]
    wrist = elbow + _dir(fore_ang) * _FOREARM * short[1]
    hip_ang, knee_bend, thigh_short = leg
    hip_pt = pelvis + sign * perp * _HIP_HALF * turn + down * _HIP_DROP
    thigh_ang = sign * hip_ang
    knee_pt = hip_pt + _dir(thigh_ang) * _THIGH * thigh_short
    ankle = knee_pt + _dir(thigh_ang + knee_bend) * _SHIN
    for name, pt in (
      ("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
      ("hip", hip_pt), ("knee", knee_pt), ("ankle", ankle),
    ):  # fmt: skip
      j[_J[f"{side}_{name}"]] = pt
    points[f"{side}_hand"] = wrist + _dir(fore_ang) * _HAND
    points[f"{side}_toe"] = ankle + _dir(sign * rad(rng.uniform(10, 60))) * _FOOT


def _torso_polygon(j: np.ndarray, lean, turn) -> np.ndarray:
  """(4, 2) convex torso: the shoulders' outer tops and the hips' outer bottoms."""
  up, down, perp = -_dir(lean), _dir(lean), _dir(lean + np.pi / 2)
  ls, rs, lh, rh = (j[_J[n]] for n in ("l_shoulder", "r_shoulder", "l_hip", "r_hip"))
  return np.stack(
    [
      rs - perp * 0.025 + up * 0.02,
      ls + perp * 0.025 + up * 0.02,
      lh + perp * 0.04 * turn + down * 0.04,
      rh - perp * 0.04 * turn + down * 0.04,
    ]
  )


def _place(j, points, torso, head, front, px: float, rot: float, offset) -> _Figure:
  """Body units -> image pixels: mirror if seen from the back, scale, rotate, shift."""
  mirror = np.array([1.0 if front else -1.0, 1.0])
  c, s = np.cos(rot), np.sin(rot)
  rmat = np.array([[c, -s], [s, c]])

  def tf(p):
    return (np.asarray(p) * mirror * px) @ rmat.T + offset

  centre, a, b, ang = head
  axis = _dir(ang) * mirror @ rmat.T  # head axis in the image
  head_px = (tf(centre), a * px, b * px, float(np.arctan2(axis[1], axis[0])))
  return _Figure(
    joints=tf(j),
    points={k: tf(v) for k, v in points.items()},
    torso=tf(torso),
    head=head_px,
    px=px,
    front=front,
  )


def _sample_figure(rng, h: int, w: int, person_height, centre=None, px=None) -> _Figure:
  """A posed figure whose standing height is `person_height` (lo, hi) x h pixels.

  Its joints' bounding-box centre lands at `centre` (x, y), or near the image
  centre when None.
  """
  pose = _sample_pose(rng)
  if px is None:
    px = rng.uniform(*person_height) * h / _STATURE_EXTENT
  rot = np.deg2rad(np.clip(rng.normal(0, 10), -30, 30))
  fig = _place(*pose, px=px, rot=rot, offset=np.zeros(2))
  if centre is None:
    centre = np.array([w, h]) * (0.5 + rng.uniform(-0.12, 0.12, 2)) - 0.5
  bbox_centre = (fig.joints.min(0) + fig.joints.max(0)) / 2
  return _place(*pose, px=px, rot=rot, offset=centre - bbox_centre)


@dataclasses.dataclass(frozen=True)
class _Outfit:
  """A figure's colours: skin, clothes and hair."""

  skin: paint.Paint
  shirt: paint.Paint
  pants: paint.Paint
  shoes: paint.Paint
  hair: paint.Paint
  sleeve: int  # 0 none, 1 short, 2 long
  long_pants: bool
  shading: float  # how much the limbs darken towards their rims


def _sample_outfit(rng: np.random.Generator) -> _Outfit:
  skin = paint.Paint(paint.skin(rng))
  shirt = paint.random_paint(rng)
  pants = paint.random_paint(rng, rng.random(3) * rng.uniform(0.3, 1.0))
  shoes = paint.Paint((rng.random(3) * 0.4).astype(np.float32))
  hair = paint.Paint(paint.hair(rng))
  sleeve = rng.choice(3, p=[0.15, 0.35, 0.5])
  long_pants = rng.random() < 0.75
  shading = rng.uniform(0.1, 0.4)
  return _Outfit(skin, shirt, pants, shoes, hair, sleeve, long_pants, shading)


def _draw_arm(cv: paint.Canvas, fig: _Figure, side: str, o: _Outfit) -> None:
  """Upper arm, forearm and hand of `side` ('l' or 'r'), sleeves as the outfit has them."""
  j, px = fig.joints, fig.px
  s, e, wr = (j[_J[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist"))
  paint.capsule(cv, s, e, _R_UPPER_ARM * px, o.shirt if o.sleeve else o.skin, o.shading)
  paint.capsule(cv, e, wr, _R_FOREARM * px, o.shirt if o.sleeve == 2 else o.skin, o.shading)
  paint.capsule(cv, wr, fig.points[f"{side}_hand"], _R_HAND * px, o.skin, o.shading)


def _draw_leg(cv: paint.Canvas, fig: _Figure, side: str, o: _Outfit) -> None:
  """Thigh, shin and foot of `side`; the shin is bare under short pants."""
  j, px = fig.joints, fig.px
  hp, k, a = (j[_J[f"{side}_{n}"]] for n in ("hip", "knee", "ankle"))
  paint.capsule(cv, hp, k, _R_THIGH * px, o.pants, o.shading)
  paint.capsule(cv, k, a, _R_SHIN * px, o.pants if o.long_pants else o.skin, o.shading)
  paint.capsule(cv, a, fig.points[f"{side}_toe"], _R_FOOT * px, o.shoes, o.shading)


def _draw_head(cv: paint.Canvas, fig: _Figure, o: _Outfit) -> None:
  """The hair ellipse, and a face with two eyes when the figure faces the camera."""
  centre, a, b, ang = fig.head
  paint.ellipse(cv, centre, a, b, ang, o.hair)
  if fig.front:
    axis = np.array([np.cos(ang), np.sin(ang)])  # points from the chin to the head top
    side = np.array([-axis[1], axis[0]])
    paint.ellipse(cv, centre - 0.15 * a * axis, 0.82 * a, 0.9 * b, ang, o.skin)
    eye = paint.Paint((o.skin.rgb * 0.25).astype(np.float32))
    for k in (-1, 1):
      paint.ellipse(cv, centre + 0.1 * a * axis + k * 0.38 * b * side, 0.09 * a, 0.09 * a, ang, eye)


def _draw_figure(
  cv: paint.Canvas, rng: np.random.Generator, fig: _Figure, self_occluded: np.ndarray | None = None
) -> None:
  """Draws the figure with random clothes, skin and hair.

  With `self_occluded` ((14,) bool, written), records which joints the figure's
  own parts hide: a joint is self-occluded when a part drawn after the joint's
  own parts covers its pixel (half or more), e.g. the elbow of an arm behind the
  torso; drawing one of its own parts later shows it again. Recording reads the
  coverage only: the image and the random stream are the same either way.
  """
  px, j, pts = fig.px, fig.joints, fig.points
  h, w = cv.hw
  pix = np.clip(np.rint(j).astype(int), 0, [w - 1, h - 1])
  inside = _inside(j, h, w)
  drawn: set[int] = set()

  def part(names, draw):
    if self_occluded is None:
      draw()
      return
    cv.over = np.zeros((h, w), np.float32)
    draw()
    own = {_J[n] for n in names}
    for k in drawn - own:
      if inside[k] and cv.over[pix[k, 1], pix[k, 0]] >= 0.5:
        self_occluded[k] = True
    for k in own:
      self_occluded[k] = False
    drawn.update(own)
    cv.over = None

  o = _sample_outfit(rng)

  def arm_part(side):
    names = [f"{side}_{n}" for n in ("shoulder", "elbow", "wrist")]
    return names, lambda: _draw_arm(cv, fig, side, o)

  sides = ["l", "r"] if rng.random() < 0.5 else ["r", "l"]
  arms_behind = [s for s in sides if rng.random() < 0.15]
  for s in arms_behind:
    part(*arm_part(s))
  for s in sides:
    part([f"{s}_{n}" for n in ("hip", "knee", "ankle")], lambda s=s: _draw_leg(cv, fig, s, o))
  part(
    ["l_shoulder", "r_shoulder", "l_hip", "r_hip"],
    lambda: paint.polygon(cv, fig.torso, 0.02 * px, o.shirt),
  )
  part(
    ["upper_neck"],
    lambda: paint.capsule(cv, pts["thorax"], j[_J["upper_neck"]], _R_NECK * px, o.skin, o.shading),
  )
  part(["upper_neck", "head_top"], lambda: _draw_head(cv, fig, o))
  for s in sides:
    if s not in arms_behind:
      part(*arm_part(s))


def _head_box(fig: _Figure) -> np.ndarray:
  """(4,) x1, y1, x2, y2: the head ellipse's bounding box, with upper_neck and head_top."""
  (cx, cy), a, b, ang = fig.head
  ex = np.hypot(a * np.cos(ang), b * np.sin(ang))
  ey = np.hypot(a * np.sin(ang), b * np.cos(ang))
  pts = np.array([[cx - ex, cy - ey], [cx + ex, cy + ey]])
  pts = np.concatenate([pts, fig.joints[[_J["upper_neck"], _J["head_top"]]]])
  return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)


def torso_box(joints: np.ndarray, pad: float = 0.15) -> np.ndarray:
  """(4,) x1, y1, x2, y2: the shoulders' and hips' bounding box, grown by `pad` x its longer side.

  Args:
    joints: (14, 2) (x, y) pixels in the synthetic annotated order.
    pad: margin on each side as a fraction of the box's longer side.
  """
  idx = [_J[n] for n in ("r_shoulder", "l_shoulder", "r_hip", "l_hip")]
  lo, hi = joints[idx].min(0), joints[idx].max(0)
  margin = pad * float(np.max(hi - lo))
  return np.concatenate([lo - margin, hi + margin]).astype(np.float32)


def _inside(pts: np.ndarray, h: int, w: int) -> np.ndarray:
  """(N,) bool: the (x, y) point lies on a pixel of an h x w image."""
  x, y = pts[:, 0], pts[:, 1]
  return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


def render_example(
  rng: np.random.Generator,
  height: int,
  width: int,
  *,
  distractor: bool = False,
  label_noise: float = 0.0,
  occluders: bool = True,
  person_height: tuple[float, float] = (0.6, 0.9),
) -> dict[str, np.ndarray]:
  """Renders one synthetic person on a cluttered background.

  Args:
    rng: the example's generator (see `example_rng`); everything is drawn from it.
    height, width: image size in pixels.
    distractor: add a second, complete figure elsewhere in the image, sometimes
      overlapping the target, drawn behind or in front of it.
    label_noise: std (pixels) of the Gaussian noise added to the stored joints.
    occluders: add 0-2 random shapes over the target's joints (probability 1/2).
    person_height: range of the target's standing height / image height.

  Returns:
    A dict of numpy arrays, points (x, y) 0-based pixels with centres at integers:
      image: (H, W, 3) uint8.
      joints: (14, 2) float32, joints_clean + N(0, label_noise²); 0 where not valid.
      joints_clean: (14, 2) float32, the true joints; 0 where not valid.
      joints_valid: (14,) bool, the true joint lies inside the image.
      joints_visible: (14,) bool, valid and not hidden: not painted over by an
        occluder, the distractor, or the person's own parts (an arm behind the
        torso, a hip behind a forearm; see `_draw_figure`).
      joints_full: (14, 2) float32, the true joints including those outside.
      head_box, torso_box: (4,) float32 x1, y1, x2, y2 (not clipped to the image).
      distractor_joints: (14, 2) float32, the distractor's true joints (may lie
        outside the image); zeros without a distractor.
      has_distractor: () bool.
  """
  _check_size(height, width, person_height)
  h, w = int(height), int(width)
  cv = paint.background(rng, h, w)
  target = _sample_figure(rng, h, w, person_height)
  other = _sample_distractor(rng, target, h, w, person_height) if distractor else None
  self_occluded = _draw_people(cv, rng, target, other)
  if occluders and rng.random() < 0.5:
    _add_occluders(cv, rng, target)
  image = _camera(rng, cv.img, h, w)
  return {"image": image, **_labels(rng, target, other, cv.over, self_occluded, label_noise)}


def _check_size(height: int, width: int, person_height: tuple[float, float]) -> None:
  if height < 16 or width < 16:
    raise ValueError(f"image size must be at least 16x16, got {height}x{width}")
  lo, hi = person_height
  if not 0 < lo <= hi:
    raise ValueError(f"person_height must satisfy 0 < lo <= hi, got {person_height}")


def _sample_distractor(rng: np.random.Generator, target: _Figure, h: int, w: int, person_height):
  """A second figure 0.3-0.6 x w to the side of the target (within 5-95 % of the
  width) at a similar size; partial overlaps happen."""
  tc = (target.joints.min(0) + target.joints.max(0)) / 2
  shift = rng.uniform(0.3, 0.6) * w * rng.choice([-1.0, 1.0])
  cx = tc[0] + shift
  if not 0.05 * w <= cx <= 0.95 * w:
    cx = tc[0] - shift
  centre = np.array([np.clip(cx, 0.05 * w, 0.95 * w), tc[1] + rng.uniform(-0.1, 0.1) * h])
  return _sample_figure(rng, h, w, person_height, centre, target.px * rng.uniform(0.75, 1.2))


def _draw_people(
  cv: paint.Canvas, rng: np.random.Generator, target: _Figure, other: _Figure | None
) -> np.ndarray:
  """Draws the target and the distractor `other` (behind or in front, even odds).

  Returns the target's (14,) bool self-occluded joints; `cv.over` then records
  what is painted over the target from here on.
  """
  in_front = other is not None and rng.random() < 0.5
  if other is not None and not in_front:
    _draw_figure(cv, rng, other)
  self_occluded = np.zeros(NUM_JOINTS, bool)
  _draw_figure(cv, rng, target, self_occluded)
  cv.over = np.zeros(cv.hw, np.float32)
  if in_front:
    _draw_figure(cv, rng, other)
  return self_occluded


def _add_occluders(cv: paint.Canvas, rng: np.random.Generator, target: _Figure) -> None:
  """1-2 clutter shapes near random joints of the target."""
  h = cv.hw[0]
  for _ in range(int(rng.integers(1, 3))):
    anchor = target.joints[rng.integers(NUM_JOINTS)]
    paint.clutter_shape(
      cv, rng, anchor + rng.normal(0, 0.05, 2) * h, target.px * rng.uniform(0.08, 0.2)
    )


def _camera(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
  """(H, W, 3) float image in [0, 1] (noised in place) -> uint8 with sensor noise,
  slightly blurred at times."""
  # Sensor noise: a random window of a fixed noise table (drawing fresh normals
  # per pixel would take longer than everything else together).
  oy, ox = rng.integers(0, h), rng.integers(0, w)
  img += rng.uniform(0.0, 0.03) * paint.noise_table(h, w)[oy : oy + h, ox : ox + w]
  image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
  if rng.random() < 0.3:
    radius = rng.uniform(0.3, 1.0)
    image = np.asarray(Image.fromarray(image).filter(ImageFilter.BoxBlur(radius)))
  return image


def _labels(
  rng: np.random.Generator,
  target: _Figure,
  other: _Figure | None,
  over: np.ndarray,
  self_occluded: np.ndarray,
  label_noise: float,
) -> dict[str, np.ndarray]:
  """`render_example`'s outputs but the image, from the figures and `over` (H, W),
  the cover of the target by what was drawn after it."""
  h, w = over.shape
  full = target.joints.astype(np.float32)
  valid = _inside(full, h, w)
  rc = np.clip(np.rint(full).astype(int), 0, [w - 1, h - 1])
  visible = valid & (over[rc[:, 1], rc[:, 0]] < 0.5) & ~self_occluded
  clean = np.where(valid[:, None], full, 0.0).astype(np.float32)
  # Drawn last so that the image and clean labels do not depend on label_noise.
  noise = rng.normal(0.0, label_noise, full.shape) if label_noise > 0 else 0.0
  noisy = np.where(valid[:, None], full + noise, 0.0).astype(np.float32)
  return {
    "joints": noisy,
    "joints_clean": clean,
    "joints_valid": valid,
    "joints_visible": visible,
    "joints_full": full,
    "head_box": _head_box(target),
    "torso_box": torso_box(full),
    "distractor_joints": (
      other.joints.astype(np.float32) if other is not None else np.zeros_like(full)
    ),
    "has_distractor": np.bool_(other is not None),
  }


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
  """(H, W, 3) uint8 -> JPEG bytes (4:2:0 chroma, like camera files)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
  """(H, W, 3) uint8 -> PNG bytes (lossless)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """Encoded bytes -> (H, W, 3) uint8."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))
