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
  curves over α ∈ [0, 0.2] (Fig. 12, 15). Three protocols (`flic_labels.PROTOCOLS`),
  which differ in the ground-truth labels and the torso; see `flic_labels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from heatpose_jax.data import flic_labels
from heatpose_jax.data import joints as joints_lib

# The thresholds of the FLIC table (Table 3 uses 0.05; 0.2 is the common "PCK@0.2").
FLIC_TABLE_THRESHOLDS = (0.05, 0.2)
MPII_TABLE_THRESHOLD = 0.5
# Pooled table columns: ((column, model joint names), ...) (`DatasetSpec.pools`).
Pools = Sequence[tuple[str, Sequence[str]]]


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


def mpii_pckh_table(
  pred, gt, valid, head_size, threshold: float = MPII_TABLE_THRESHOLD
) -> dict[str, float]:
  """MPII's PCKh table: Head, Shoulder, ..., Ankle, UBody, Total.

  Args:
    pred, gt: (N, 16, 2) (x, y) in MPII joint-id order, one frame.
    valid: (N, 16) bool annotated (occluded joints count).
    head_size: (N,) 0.6 × head-box diagonal (`joints.head_size_from_boxes`), same units.
    threshold: α (0.5 for the paper's table).

  Returns:
    Column -> percentage.
  """
  return pck_tables(pred, gt, valid, head_size, joints_lib.SKELETONS["mpii"], [threshold])[
    float(threshold)
  ]


# --- FLIC --------------------------------------------------------------------


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
  (`flic_labels.protocol_labels`), normalized by that protocol's torso; the hips only
  enter the normalizer.

  Predictions: under `modec` and `hourglass` they are compared as they are. For
  `modec` that is what `eval_dataset.m` does: MODEC is trained on flipped labels,
  so its "left arm" of a backward-facing person is the arm the flipped ground
  truth calls left. A model trained on examples.mat's raw labels is scored the
  same way and loses the arms of the (48 test) people the flip relabels unless
  it learned the same convention, so train with `flic_labels.flip_backwards_facing` when
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
    protocol: one of `flic_labels.PROTOCOLS`.
    predictions_observer_centric: `observer_centric` only; see above.

  Returns:
    α -> column -> percentage.
  """
  skel = joints_lib.SKELETONS["flic"]
  pred = np.asarray(pred_annotated, np.float64)
  labels = flic_labels.protocol_labels(gt_annotated, valid, protocol)
  if protocol == "observer_centric" and not predictions_observer_centric:
    pred, _ = flic_labels.to_observer_centric(
      pred, np.asarray(valid, bool), labels.relabelled, skel
    )
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


def format_rows(rows: Mapping[str, Mapping[str, float]]) -> str:
  """Fixed-width text table: one row per entry, columns from the first row, %.1f."""
  cols = list(next(iter(rows.values())))
  label_w = max(len(r) for r in rows)
  widths = [max(len(c), 5) for c in cols]
  lines = [" ".join([" " * label_w] + [c.rjust(w) for c, w in zip(cols, widths, strict=True)])]
  for label, vals in rows.items():
    cells = [f"{vals[c]:.1f}".rjust(w) for c, w in zip(cols, widths, strict=True)]
    lines.append(" ".join([label.ljust(label_w)] + cells))
  return "\n".join(lines)
