"""PCK and PCKh: the benchmark metrics of FLIC, MPII, LSP and the synthetic people.

Every function is vectorized over examples and joints (numpy; jax arrays are
accepted and pulled to the host with `np.asarray`, except by
`flip_backwards_facing`, which stays in the caller's array library so that it also
runs under `jax.jit`). Which joints count is always an explicit boolean mask
`valid` (annotated): nothing is inferred from coordinate values. Points are
`(x, y)` in any one frame shared by `pred` and `gt` (distances are translation
invariant, so a common 0- or 1-based shift does not matter); the normalizer must
be in the same pixel units.

A joint of an example is *evaluated* when it is valid and the example's normalizer
is finite and > 0; an evaluated joint is *correct* at threshold α when
`‖pred − gt‖ / normalizer ≤ α` (the official scripts divide, then compare with
`≤`). Examples whose normalizer is ≤ 0 (e.g. a missing head box or torso joint)
are excluded from the counts, as if their joints were missing. A NaN prediction is
never correct (MPII's scripts turn NaN predictions into `inf`).

Protocols (see `docs/protocols.md`):

* PCKh, MPII's `evaluatePCKh.m` / `computePCK.m` / `genTablePCK.m`: "head size =
  0.6 × ‖(x1, y1) − (x2, y2)‖, the head box's diagonal; correct if distance / head
  size ≤ α (α = 0.5 for the table; curve over 0…0.5); joints with no ground truth
  are skipped; annotated-but-occluded joints COUNT; pelvis and thorax are excluded;
  the table's Head = mean of head top and upper neck, Shoulder/Elbow/Wrist/Hip/
  Knee/Ankle = mean of left and right, UBody = shoulders, elbows, wrists, Total =
  pooled over the 14 joints (count-weighted)." So a per-joint rate is taken over
  that joint's own evaluated examples; a named column is the plain (unweighted)
  mean of its joints' rates; UBody and Total pool correct / evaluated over their
  joints, which equals the count-weighted mean of the per-joint rates (HRNet's
  `jnt_ratio`-weighted "Mean").
* PCK, FLIC: ‖pred − gt‖ ≤ α · torso, per joint with L/R averaged (Table 3),
  curves over α ∈ [0, 0.2] (Fig. 12, 15). Three protocols (`FLIC_PROTOCOLS`), which
  differ in the ground-truth labels and the torso; see `flic_protocol_labels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from heatpose_jax import joints as joints_lib

# The thresholds of the FLIC table (Table 3 uses 0.05; 0.2 is the common "PCK@0.2").
FLIC_TABLE_THRESHOLDS = (0.05, 0.2)
# FLIC's evaluation protocols (see `flic_protocol_labels`); the first is the default.
FLIC_PROTOCOLS = ("modec", "hourglass", "observer_centric")
# Each protocol's torso: two annotated joints of its (possibly relabelled) ground truth.
FLIC_TORSO = {
  "modec": ("l_shoulder", "r_hip"),  # MODEC's eval_dataset.m: scale_by_parts = {'lsho', 'rhip'}
  "hourglass": ("r_shoulder", "l_hip"),  # the stacked-hourglass FLIC files' `normalize`
  "observer_centric": ("r_shoulder", "l_hip"),
}
# The arm joints that MODEC's flip_backwards_facing_groundtruth.m compares and swaps.
_ARMS = (("l_shoulder", "r_shoulder"), ("l_elbow", "r_elbow"), ("l_wrist", "r_wrist"))
MPII_TABLE_THRESHOLD = 0.5
# Pooled table columns: ((column, model joint names), ...) (`DatasetSpec.pools`).
Pools = Sequence[tuple[str, Sequence[str]]]
# MPII head size = SC_BIAS x head-box diagonal (`util_get_head_size` in the toolkit).
HEAD_SIZE_FACTOR = 0.6


def _evaluated(valid, normalizer) -> tuple[np.ndarray, np.ndarray]:
  """(N, J) evaluated mask and the normalizer broadcast to (N, J)."""
  valid = np.asarray(valid, bool)
  norm = np.asarray(normalizer, np.float64)
  if norm.ndim == 1:
    norm = norm[:, None]
  norm = np.broadcast_to(norm, valid.shape)
  ok = valid & np.isfinite(norm) & (norm > 0)
  return ok, norm


def normalized_distances(pred, gt, normalizer) -> np.ndarray:
  """‖pred − gt‖ / normalizer.

  Args:
    pred: (N, J, 2) predicted (x, y).
    gt: (N, J, 2) ground-truth (x, y), same frame as `pred`.
    normalizer: (N,) or (N, J) in the same pixel units.

  Returns:
    (N, J) float64; inf or NaN where the normalizer is ≤ 0 (mask those out with
    `valid & (normalizer > 0)`, as `pck` does).
  """
  dist = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
  norm = np.asarray(normalizer, np.float64)
  if norm.ndim == 1:
    norm = norm[:, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    return dist / norm


def pck(pred, gt, valid, normalizer, thresholds) -> tuple[np.ndarray, np.ndarray]:
  """Which joints are correct at each threshold.

  Args:
    pred: (N, J, 2) predicted (x, y).
    gt: (N, J, 2) ground truth (x, y), same frame; finite where `valid`.
    valid: (N, J) bool, the joint has a ground-truth location (annotated,
      occluded or not).
    normalizer: (N,) or (N, J) head size (PCKh) or torso size (PCK); rows with a
      value ≤ 0 (or non-finite) are excluded.
    thresholds: scalar or (T,) α values.

  Returns:
    `(correct, evaluated)`: (T, N, J) bool, `dist / normalizer ≤ α` on evaluated
    joints (False elsewhere), and the (N, J) bool mask of evaluated joints.
  """
  evaluated, _ = _evaluated(valid, normalizer)
  ratio = normalized_distances(pred, gt, normalizer)
  alphas = np.atleast_1d(np.asarray(thresholds, np.float64))
  correct = (ratio[None] <= alphas[:, None, None]) & evaluated[None]
  return correct, evaluated


def pck_curve(pred, gt, valid, normalizer, thresholds) -> tuple[np.ndarray, np.ndarray]:
  """Per-joint PCK rates over thresholds.

  Args: as `pck`.

  Returns:
    `(rates, counts)`: (T, J) float64 percentages, each over that joint's own
    evaluated examples (NaN for a joint with none), and the (J,) int number of
    evaluated examples per joint.
  """
  correct, evaluated = pck(pred, gt, valid, normalizer, thresholds)
  counts = evaluated.sum(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    rates = np.where(counts > 0, 100.0 * correct.sum(1) / counts, np.nan)
  return rates, counts


def _pooled(rates: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """Count-weighted mean of rates[..., idx] (= pooled correct / evaluated)."""
  c = counts[idx].astype(np.float64)
  if c.sum() == 0:
    return np.full(rates.shape[:-1], np.nan)
  return (np.where(c > 0, rates[..., idx], 0.0) * c).sum(-1) / c.sum()


def table(
  rates, counts, skeleton: joints_lib.Skeleton, pooled: bool | Pools = True
) -> dict[str, float | np.ndarray]:
  """The paper-style table from per-joint rates.

  Named columns (`skeleton.table`, e.g. Head, Shoulder, ...) are the plain mean
  of their joints' per-joint rates, as MPII's `genTablePCK.m` does
  (`(pck(lsho) + pck(rsho)) / 2`). A joint with no evaluated example is left out
  of its column's mean (the official script would print NaN; the two agree
  whenever every joint has an example). Pooled columns follow: correct /
  evaluated over their joints, i.e. the count-weighted mean of per-joint rates
  (`computePCK.m`); `pooled=True` gives MPII's (`joints.body_pools`): "UBody"
  over the joints of `joints.UPPER_BODY_COLUMNS` (shoulders, elbows, wrists) and
  "Total" over `skeleton.scored` (MPII: the 14 joints without pelvis and thorax).

  Args:
    rates: (..., J) per-joint percentages in model order (NaN where count 0),
      e.g. one row of `pck_curve`'s rates, or all T rows for column curves.
    counts: (J,) evaluated examples per joint.
    skeleton: gives the columns and the scored joints.
    pooled: the pooled columns, ((column, model joint names), ...) as a
      dataset's `DatasetSpec.pools`; True: `joints.body_pools(skeleton)`;
      False or (): none (the FLIC table).

  Returns:
    Column name -> percentage: a float for (J,) rates, else an array of shape
    `rates.shape[:-1]`.
  """
  rates = np.asarray(rates, np.float64)
  counts = np.asarray(counts)
  has = counts > 0
  out = {}
  cols = skeleton.table_indices()
  for name, idx in cols.items():
    n = has[idx].sum()
    total = np.where(has[idx], rates[..., idx], 0.0).sum(-1)
    out[name] = total / n if n else np.full(rates.shape[:-1], np.nan)
  if pooled is True:
    pooled = joints_lib.body_pools(skeleton)
  for name, joint_names in pooled or ():
    out[name] = _pooled(rates, counts, np.array([skeleton.index(n) for n in joint_names]))
  if rates.ndim == 1:
    out = {k: float(v) for k, v in out.items()}
  return out


def pck_tables(
  pred,
  gt,
  valid,
  normalizer,
  skeleton: joints_lib.Skeleton,
  thresholds: Sequence[float],
  pooled: bool | Pools = True,
) -> dict[float, dict[str, float]]:
  """One table per threshold, for model-order joints of any skeleton.

  Args:
    pred, gt: (N, J, 2) model-order (x, y), one frame.
    valid: (N, J) bool annotated.
    normalizer: (N,) head size (PCKh) or torso size (PCK), e.g. the dataset's
      `head_size` / `torso_size` features (synthetic people have both).
    skeleton: the dataset's skeleton (J = skeleton.num_joints).
    thresholds: α values.
    pooled: the pooled columns (see `table`).

  Returns:
    α -> column -> percentage.
  """
  rates, counts = pck_curve(pred, gt, valid, normalizer, thresholds)
  return {
    float(t): table(r, counts, skeleton, pooled) for t, r in zip(thresholds, rates, strict=True)
  }


# --- MPII --------------------------------------------------------------------


def head_size_from_boxes(head_boxes) -> np.ndarray:
  """MPII's PCKh normalizer from head boxes.

  Args:
    head_boxes: (N, 4) x1, y1, x2, y2 in pixels.

  Returns:
    (N,) 0.6 × ‖(x2, y2) − (x1, y1)‖ (0 for an all-zero box, so the row is excluded).
  """
  b = np.asarray(head_boxes, np.float64)
  return HEAD_SIZE_FACTOR * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def mpii_pckh_table(
  pred, gt, valid, head_size, threshold: float = MPII_TABLE_THRESHOLD
) -> dict[str, float]:
  """MPII's PCKh table: Head, Shoulder, ..., Ankle, UBody, Total.

  Args:
    pred, gt: (N, 16, 2) (x, y) in MPII joint-id order, one frame.
    valid: (N, 16) bool annotated (occluded joints count).
    head_size: (N,) 0.6 × head-box diagonal, same units.
    threshold: α (0.5 for the paper's table).

  Returns:
    Column -> percentage.
  """
  return pck_tables(pred, gt, valid, head_size, joints_lib.SKELETONS["mpii"], [threshold])[
    float(threshold)
  ]


# --- FLIC --------------------------------------------------------------------


def _check_flic_protocol(protocol: str) -> None:
  if protocol not in FLIC_PROTOCOLS:
    raise ValueError(f"unknown FLIC protocol {protocol!r}; expected one of {FLIC_PROTOCOLS}")


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


def torso_normalizer(
  gt_annotated, valid, skeleton: joints_lib.Skeleton, pair: tuple[str, str] | None = None
) -> np.ndarray:
  """PCK torso size: the distance between two annotated joints of the ground truth.

  Args:
    gt_annotated: (N, A, 2) ground truth (x, y), annotated order.
    valid: (N, A) bool.
    skeleton: gives the annotated order, and the default pair `skeleton.torso`
      (‖r_shoulder − l_hip‖).
    pair: two annotated joint names instead of `skeleton.torso` (FLIC's protocols:
      `FLIC_TORSO`).

  Returns:
    (N,) torso size; 0 where either joint is missing (such rows are excluded).
  """
  a, b = (
    skeleton.torso_annotated_indices
    if pair is None
    else (skeleton.annotated.index(pair[0]), skeleton.annotated.index(pair[1]))
  )
  g = np.asarray(gt_annotated, np.float64)
  v = np.asarray(valid, bool)
  return np.where(v[:, a] & v[:, b], np.linalg.norm(g[:, a] - g[:, b], axis=-1), 0.0)


class FlicLabels(NamedTuple):
  """FLIC ground truth under one protocol (`flic_protocol_labels`).

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


def flic_protocol_labels(gt_annotated, valid=None, protocol: str = "modec") -> FlicLabels:
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
    protocol: one of `FLIC_PROTOCOLS`.

  Returns:
    `FlicLabels` (joints, valid, torso, relabelled rows).
  """
  _check_flic_protocol(protocol)
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
  return FlicLabels(g, v, torso_normalizer(g, v, skel, FLIC_TORSO[protocol]), swapped)


def flic_torso_normalizer(gt_annotated, valid=None, protocol: str = "modec") -> np.ndarray:
  """FLIC's PCK normalizer under `protocol` (see `flic_protocol_labels`).

  Args:
    gt_annotated: (N, 11, 2) examples.mat's annotated joints as stored.
    valid: (N, 11) bool, default all True.
    protocol: one of `FLIC_PROTOCOLS`.

  Returns:
    (N,) torso sizes (0 where a torso joint is missing).
  """
  return flic_protocol_labels(gt_annotated, valid, protocol).torso


def flic_pck_tables(
  pred_annotated,
  gt_annotated,
  valid,
  thresholds: Sequence[float] = FLIC_TABLE_THRESHOLDS,
  protocol: str = "modec",
  predictions_observer_centric: bool = False,
) -> dict[float, dict[str, float]]:
  """FLIC's PCK table (Head = nose, Shoulder, Elbow, Wrist; L/R averaged).

  Scores the paper's 7 model joints against the ground truth of `protocol`
  (`flic_protocol_labels`), normalized by that protocol's torso; the hips only
  enter the normalizer.

  Predictions: under `modec` and `hourglass` they are compared as they are. For
  `modec` that is what `eval_dataset.m` does: MODEC is trained on flipped labels,
  so its "left arm" of a backward-facing person is the arm the flipped ground
  truth calls left. A model trained on examples.mat's raw labels is scored the
  same way and loses the arms of the (48 test) people the flip relabels unless
  it learned the same convention, so train with `flip_backwards_facing` when
  reporting `modec` numbers. Under `observer_centric`, predictions are relabelled
  like the ground truth (one decision, taken on the ground truth) unless
  `predictions_observer_centric` says they already use observer-centric labels
  (a model trained on them); for person-centric predictions this changes only the
  torso and which side each per-joint rate is filed under, so the L/R-averaged
  columns move only through the normalizer.

  Args:
    pred_annotated: (N, 11, 2) predictions of the 11 annotated joints, same
      frame as `gt_annotated` (hips unused).
    gt_annotated: (N, 11, 2) examples.mat's ground truth as stored, annotated order.
    valid: (N, 11) bool annotated.
    thresholds: α values.
    protocol: one of `FLIC_PROTOCOLS`.
    predictions_observer_centric: `observer_centric` only; see above.

  Returns:
    α -> column -> percentage.
  """
  skel = joints_lib.SKELETONS["flic"]
  pred = np.asarray(pred_annotated, np.float64)
  labels = flic_protocol_labels(gt_annotated, valid, protocol)
  if protocol == "observer_centric" and not predictions_observer_centric:
    pred, _ = to_observer_centric(pred, np.asarray(valid, bool), labels.relabelled, skel)
  m = skel.model_indices
  return pck_tables(
    pred[:, m], labels.joints[:, m], labels.valid[:, m], labels.torso, skel, thresholds, False
  )


# --- precision ---------------------------------------------------------------

# σ of a normal distribution = MAD_TO_SIGMA × its median absolute deviation.
MAD_TO_SIGMA = 1.4826


class XErrorStats(NamedTuple):
  """Spread of the x error (`x_error_stats`).

  Attributes:
    sigma: population standard deviation (ddof = 0) of the kept errors.
    robust_sigma: 1.4826 × median absolute deviation (from their median) of the
      kept errors; equals σ for normal errors and ignores a few stray ones.
    removed: valid errors outside the window (or NaN predictions).
    kept: valid errors inside the window.
  """

  sigma: float | np.ndarray
  robust_sigma: float | np.ndarray
  removed: int | np.ndarray
  kept: int | np.ndarray


def x_error_stats(
  pred, gt, valid, outlier_px: float = 20.0, per_joint: bool = False
) -> XErrorStats:
  """σ and robust σ of the x error, outliers removed (the paper's Table 1, Fig. 11).

  The paper: "When calculating σ for our model, we remove all outliers with error
  > 20 and error < −20", i.e. errors e = x_pred − x_gt with |e| ≤ outlier_px are
  kept; a NaN prediction counts as removed. Coordinates are in the caller's frame
  (the paper quotes the network input frame, 360 × 240 for FLIC).

  Args:
    pred, gt: (N, J, 2) (x, y).
    valid: (N, J) bool.
    outlier_px: keep |e| ≤ outlier_px.
    per_joint: statistics per joint ((J,) arrays) instead of pooled over every
      valid (example, joint) given (Python scalars).

  Returns:
    `XErrorStats(sigma, robust_sigma, removed, kept)`; σs are NaN where nothing
    is kept.
  """
  err = np.asarray(pred, np.float64)[..., 0] - np.asarray(gt, np.float64)[..., 0]
  valid = np.broadcast_to(np.asarray(valid, bool), err.shape)
  if not per_joint:
    err, valid = err.reshape(-1, 1), valid.reshape(-1, 1)
  keep = valid & (np.abs(err) <= outlier_px)  # False for NaN
  kept_err = np.where(keep, err, np.nan)
  with warnings.catch_warnings():  # a joint with nothing kept gives NaN, not a warning
    warnings.simplefilter("ignore", RuntimeWarning)
    sigma = np.nanstd(kept_err, axis=0)
    median = np.nanmedian(kept_err, axis=0)
    robust = MAD_TO_SIGMA * np.nanmedian(np.abs(kept_err - median), axis=0)
  removed = (valid & ~keep).sum(0)
  kept = keep.sum(0)
  if per_joint:
    return XErrorStats(sigma, robust, removed, kept)
  return XErrorStats(float(sigma[0]), float(robust[0]), int(removed[0]), int(kept[0]))


def x_error_sigma(pred, gt, valid, outlier_px: float = 20.0) -> tuple[float, int]:
  """`(σ, removed)` of `x_error_stats`, pooled over every valid (example, joint).

  Args: as `x_error_stats`; slice `pred[:, [j]]` for one joint.

  Returns:
    (σ, number of valid errors removed); σ is NaN when nothing is kept.
  """
  stats = x_error_stats(pred, gt, valid, outlier_px)
  return stats.sigma, stats.removed


# --- printing ----------------------------------------------------------------


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
  """Fixed-width text table: one row per entry, columns from the first row, %.1f."""
  cols = list(next(iter(rows.values())))
  label_w = max(len(r) for r in rows)
  widths = [max(len(c), 5) for c in cols]
  lines = [" ".join([" " * label_w] + [c.rjust(w) for c, w in zip(cols, widths, strict=True)])]
  for label, vals in rows.items():
    cells = [f"{vals[c]:.1f}".rjust(w) for c, w in zip(cols, widths, strict=True)]
    lines.append(" ".join([label.ljust(label_w)] + cells))
  return "\n".join(lines)
