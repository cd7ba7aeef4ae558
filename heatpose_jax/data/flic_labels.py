"""FLIC's ground-truth relabellings: which labels and which torso each of its
evaluation protocols scores against (`protocol_labels`), and the relabelling
functions they are made of (MODEC's flip of backward-facing arms, the
observer-centric swap). The PCK itself is `metrics.flic_pck_tables`; the
protocols are compared in docs/protocols.md.

Joints are `(N, A, 2)` (x, y) in a skeleton's annotated order, any one pixel
frame whose x grows to the image's right; `valid` is an explicit `(N, A)` mask.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from heatpose_jax.data import joints as joints_lib

# FLIC's evaluation protocols (see `protocol_labels`); the first is the default.
PROTOCOLS = ("modec", "hourglass", "observer_centric")
# Each protocol's torso: two annotated joints of its (possibly relabelled) ground truth.
TORSO = {
  "modec": ("l_shoulder", "r_hip"),  # MODEC's eval_dataset.m: scale_by_parts = {'lsho', 'rhip'}
  "hourglass": ("r_shoulder", "l_hip"),  # the stacked-hourglass FLIC files' `normalize`
  "observer_centric": ("r_shoulder", "l_hip"),
}
# The arm joints that MODEC's flip_backwards_facing_groundtruth.m compares and swaps.
_ARMS = (("l_shoulder", "r_shoulder"), ("l_elbow", "r_elbow"), ("l_wrist", "r_wrist"))


def _check_protocol(protocol: str) -> None:
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown FLIC protocol {protocol!r}; expected one of {PROTOCOLS}")


def _array_module(x):
  """numpy, or jax.numpy for a jax array or tracer (imported only then)."""
  if type(x).__module__.split(".")[0] == "jax":
    import jax.numpy as jnp

    return jnp
  return np


def flip_backwards_facing(joints_annotated, valid, skeleton: joints_lib.Skeleton):
  """MODEC's `flip_backwards_facing_groundtruth.m`: swaps the arm labels of people
  whose left arm lies wholly left (in the image) of their right arm.

  A row is flipped when, for each of the shoulder, elbow and wrist, `x(left) <
  x(right)` (strictly, all three; a row with any of the six arm joints not valid
  is left alone, as MATLAB's NaN comparisons are false). On flipped rows the left
  and right shoulder, elbow and wrist swap places; hips, eyes and nose stay.
  Applying it twice changes nothing more (a flipped row has `x(left) > x(right)`).
  `valid` needs no swap: a flipped row has all six arm joints valid.

  Works on numpy and jax arrays (under `jax.jit` too), so it can relabel one
  training example (N = 1) or a batch.

  Args:
    joints_annotated: (N, A, 2) (x, y) in `skeleton`'s annotated order, any frame
      whose x grows to the image's right (e.g. 0-based pixels).
    valid: (N, A) bool annotated.
    skeleton: has the left/right shoulder, elbow and wrist among its annotated
      joints (FLIC, MPII, LSP, synthetic).

  Returns:
    `(joints, flipped)`: (N, A, 2) relabelled copy (same array library and dtype),
    and the (N,) bool rows that were flipped.
  """
  xp = _array_module(joints_annotated)
  j = xp.asarray(joints_annotated)
  v = xp.asarray(valid).astype(bool)
  left = np.array([skeleton.annotated.index(a) for a, _ in _ARMS])
  right = np.array([skeleton.annotated.index(b) for _, b in _ARMS])
  arms_valid = v[:, left].all(-1) & v[:, right].all(-1)
  flipped = arms_valid & (j[:, left, 0] < j[:, right, 0]).all(-1)
  perm = np.arange(len(skeleton.annotated))
  perm[left], perm[right] = right, left
  return xp.where(flipped[:, None, None], j[:, perm], j), flipped


def faces_away(joints_annotated, valid, skeleton: joints_lib.Skeleton) -> np.ndarray:
  """Whether each person shows their back, judged from person-centric labels.

  Person-centric labels (examples.mat, MPII) name joints from the person's view:
  a person facing the camera has the left shoulder on the image's right, so
  `x(l_shoulder) > x(r_shoulder)`. The person faces away when
  `x(l_shoulder) < x(r_shoulder)` (strictly; needs both shoulders valid). This is
  the rule of the stacked-hourglass observer-centric FLIC files: their `valid.h5`
  differs from `valid_personcentric.h5` (= examples.mat) on the 48 test examples
  it selects, by a swap of every left/right pair (on FLIC's test set these are
  also exactly the 48 rows `flip_backwards_facing` flips).

  Args:
    joints_annotated: (N, A, 2) (x, y) in the skeleton's annotated order.
    valid: (N, A) bool.
    skeleton: has `l_shoulder` and `r_shoulder` among its annotated joints.

  Returns:
    (N,) bool.
  """
  j = np.asarray(joints_annotated)
  v = np.asarray(valid, bool)
  lsho, rsho = skeleton.annotated.index("l_shoulder"), skeleton.annotated.index("r_shoulder")
  return v[:, lsho] & v[:, rsho] & (j[:, lsho, 0] < j[:, rsho, 0])


def to_observer_centric(
  joints_annotated, valid, swap, skeleton: joints_lib.Skeleton
) -> tuple[np.ndarray, np.ndarray]:
  """Swaps every left/right label pair on the rows `swap` selects.

  Observer-centric labels name the joints as if every person faced the camera:
  the "right shoulder" is the one with the smaller x. Pass `swap =
  faces_away(gt, ...)` for both ground truth and predictions so that one
  decision, taken on the ground truth, relabels both.

  Args:
    joints_annotated: (N, A, 2) annotated order.
    valid: (N, A) bool.
    swap: (N,) bool rows to relabel.
    skeleton: gives the left/right pairs.

  Returns:
    (joints (N, A, 2), valid (N, A)) relabelled copies.
  """
  j = np.asarray(joints_annotated)
  v = np.asarray(valid, bool)
  s = np.asarray(swap, bool)
  perm = skeleton.annotated_flip_permutation
  return np.where(s[:, None, None], j[:, perm], j), np.where(s[:, None], v[:, perm], v)


class Labels(NamedTuple):
  """FLIC ground truth under one protocol (`protocol_labels`).

  Attributes:
    joints: (N, 11, 2) the protocol's labels, examples.mat's annotated order.
    valid: (N, 11) bool, relabelled like `joints`.
    torso: (N,) the protocol's torso size (0 where a torso joint is missing).
    relabelled: (N,) bool rows whose labels the protocol swapped.
  """

  joints: np.ndarray
  valid: np.ndarray
  torso: np.ndarray
  relabelled: np.ndarray


def protocol_labels(gt_annotated, valid=None, protocol: str = "modec") -> Labels:
  """FLIC's ground truth and torso as one evaluation protocol defines them.

  * `modec` (default) — the FLIC authors' own evaluation, MODEC's `eval_dataset.m`:
    first `flip_backwards_facing_groundtruth.m` (`flip_backwards_facing`: swap the
    left and right ARM labels of every example whose lsho, lelb and lwri all have
    smaller x than rsho, relb and rwri; hips untouched), then torso = ‖l_shoulder −
    r_hip‖ of these flipped labels (`score_predictions.m`, `scale_by_parts =
    {'lsho', 'rhip'}`). On a flipped row that is ‖r_shoulder − r_hip‖ of
    examples.mat's labels (one side of the torso, shorter than a diagonal).
  * `hourglass` — examples.mat's labels as stored, torso = ‖r_shoulder − l_hip‖
    (the `normalize` field of the stacked-hourglass FLIC `.h5` files).
  * `observer_centric` — on people facing away (`faces_away`) every left/right
    pair is swapped (`to_observer_centric`; the stacked-hourglass observer-centric
    `valid.h5` labels), then torso = ‖r_shoulder − l_hip‖ of the swapped labels
    (the hourglass files keep the person-centric `normalize`; we recompute it).

  Args:
    gt_annotated: (N, 11, 2) examples.mat's 11 annotated joints as stored
      (`joints.FLIC_COORD_COLUMNS` order), any one pixel frame.
    valid: (N, 11) bool annotated, default all True.
    protocol: one of `PROTOCOLS`.

  Returns:
    `Labels` (joints, valid, torso, relabelled rows).
  """
  _check_protocol(protocol)
  skel = joints_lib.SKELETONS["flic"]
  g = np.asarray(gt_annotated, np.float64)
  v = np.ones(g.shape[:2], bool) if valid is None else np.asarray(valid, bool)
  if protocol == "modec":
    g, swapped = flip_backwards_facing(g, v, skel)
  elif protocol == "observer_centric":
    swapped = faces_away(g, v, skel)
    g, v = to_observer_centric(g, v, swapped, skel)
  else:
    swapped = np.zeros(g.shape[0], bool)
  return Labels(g, v, joints_lib.torso_size(g, v, skel, TORSO[protocol]), swapped)


def torso_normalizer(gt_annotated, valid=None, protocol: str = "modec") -> np.ndarray:
  """FLIC's PCK normalizer under `protocol` (see `protocol_labels`).

  Args:
    gt_annotated: (N, 11, 2) examples.mat's annotated joints as stored.
    valid: (N, 11) bool, default all True.
    protocol: one of `PROTOCOLS`.

  Returns:
    (N,) torso sizes (0 where a torso joint is missing).
  """
  return protocol_labels(gt_annotated, valid, protocol).torso
