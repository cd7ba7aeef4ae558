"""Where the estimates go wrong, and what the cascade's fine model fixes and breaks.

  config.evals.errors = dict(type="errors", normalizer="head_size", alpha=0.5)
  python -m experiments.evaluate --workdir=W --evals=errors     # its defaults, one evaluation

Each annotated joint's estimate falls in one class (after Ronchi & Perona 2017,
"Benchmarking and error diagnosis in multi-instance pose estimation", for one
person per example), with the threshold t = alpha × the example's normalizer:

  correct   within t of the joint (what PCK@alpha counts);
  swap      not correct, within t of its left/right partner (the skeleton's
            flip pairs): the left and right limbs exchanged;
  near      not correct, not a swap, within 2t;
  miss      the rest.

With both the coarse estimate and the cascade in `preds`, the joints are also
binned by the coarse estimate's error in units of t, and each bin gives the share
of the joints and the fraction the coarse estimate and the cascade get correct:
how far from the joint the fine model still finds it. `fixed` / `broken` count
the joints the cascade makes correct / incorrect against the coarse estimate.
Distances are in the canvas frame ((x, y), 0-based input pixels).

The classes are also given per view of the figure (`view`): seen from the front
or from the back, as the ground truth's shoulders and hips say. A model that has
not learned which way a figure faces puts the left limbs of figures seen from the
back on the right: their swaps, not the front's, then hold most of the error
(docs/training.md, "Sixth round").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from heatpose_jax.data import dataset_specs
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics
from heatpose_jax.evaluation.evaluators import estimates

CLASSES = ("correct", "swap", "near", "miss")
# Bin edges of the coarse error, in units of the threshold.
BINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, float("inf"))


def check(*, normalizer: str = "head_size", alpha: float = 0.5) -> None:
  if normalizer not in dataset_specs.NORMALIZERS:
    raise ValueError(f"normalizer must be 'head_size' or 'torso_size', got {normalizer!r}")
  if not alpha > 0:
    raise ValueError(f"alpha={alpha!r}: must be > 0")


def classify(
  xy: np.ndarray,
  gt: np.ndarray,
  valid: np.ndarray,
  normalizer: np.ndarray,
  alpha: float,
  flip_perm: Sequence[int],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """`({class: (N, J) bool} for `CLASSES`, evaluated (N, J) bool)`: `correct` is
  `metrics.pck`'s at `alpha`, and every evaluated joint is in exactly one class.

  Args:
    xy, gt: `(N, J, 2)` estimates and ground truth, one frame.
    valid: `(N, J)` annotated joints.
    normalizer: `(N,)` head or torso size (rows ≤ 0 are not evaluated, as in PCK).
    alpha: the threshold, in units of the normalizer.
    flip_perm: the model-order joint that is each joint's left/right partner
      (itself for the joints on the midline: they never swap).
  """
  (correct,), evaluated = metrics.pck(xy, gt, valid, normalizer, alpha)
  perm = np.asarray(flip_perm)
  has_partner = evaluated[:, perm] & (perm != np.arange(len(perm)))[None]
  to_partner = metrics.normalized_distances(xy, gt[:, perm], normalizer)
  swap = evaluated & ~correct & has_partner & (to_partner <= alpha)
  ratio = metrics.normalized_distances(xy, gt, normalizer)
  near = evaluated & ~correct & ~swap & (ratio <= 2 * alpha)
  miss = evaluated & ~(correct | swap | near)
  return {"correct": correct, "swap": swap, "near": near, "miss": miss}, evaluated


VIEWS = ("front", "back")


# The joint that gives a hip-less skeleton (FLIC's upper body) its body axis.
_HEAD_JOINTS = ("upper_neck", "nose", "head_top")


def _view_joints(skeleton: joints_lib.Skeleton) -> dict[str, int]:
  """Model-order indices of the joints `view` reads, those the skeleton has: "ls",
  "rs" and "lh", "rh" from its (left, right) `flip_pairs` of shoulders and hips
  (whatever they are called), "head" the first of `_HEAD_JOINTS`."""
  found = {}
  for left, right in skeleton.flip_pairs:
    for part, key in (("shoulder", "s"), ("hip", "h")):
      if part in left and {left, right} <= set(skeleton.model_joints):
        found["l" + key], found["r" + key] = skeleton.index(left), skeleton.index(right)
  head = [n for n in _HEAD_JOINTS if n in skeleton.model_joints]
  if head:
    found["head"] = skeleton.index(head[0])
  return found


def view(gt: np.ndarray, valid: np.ndarray, skeleton: joints_lib.Skeleton) -> np.ndarray:
  """`(N,)` the way each figure faces, from its ground truth: 1 seen from the front,
  -1 from the back, 0 unknown (a joint it needs not annotated, or a skeleton
  without them).

  From the front, the figure's left shoulder (and hip) lie on the image's right of
  its body axis: the sign of the 2-D cross product of that axis and left − right,
  in the image frame ((x, y), y down). The axis runs from the hips' midpoint to the
  shoulders'; a skeleton without hips (FLIC's upper body) uses the shoulders' midpoint
  to the neck or nose, and left − right of the shoulders alone. A figure lying
  across the image or turned sideways can come out either way.

  Args:
    gt: `(N, J, 2)` model-order joints; valid: `(N, J)`.
  """
  j = _view_joints(skeleton)
  if "ls" not in j or not ("lh" in j or "head" in j):
    return np.zeros(gt.shape[0], np.int8)
  shoulders = (gt[:, j["ls"]] + gt[:, j["rs"]]) / 2
  left = gt[:, j["ls"]] - gt[:, j["rs"]]
  if "lh" in j:
    used = [j["ls"], j["rs"], j["lh"], j["rh"]]
    axis = shoulders - (gt[:, j["lh"]] + gt[:, j["rh"]]) / 2
    left = left + gt[:, j["lh"]] - gt[:, j["rh"]]
  else:
    used = [j["ls"], j["rs"], j["head"]]
    axis = gt[:, j["head"]] - shoulders
  cross = axis[:, 0] * left[:, 1] - axis[:, 1] * left[:, 0]
  known = valid[:, used].all(1) & (cross != 0)
  return np.where(known, np.sign(cross), 0).astype(np.int8)


def _by_view(classes: Mapping[str, np.ndarray], evaluated: np.ndarray, views: np.ndarray) -> dict:
  """{view: {"figures": n, class: % of that view's evaluated joints}} for the views of
  `VIEWS` that have evaluated joints."""
  out = {}
  for name, v in zip(VIEWS, (1, -1), strict=True):
    m = evaluated & (views == v)[:, None]
    n = int(m.sum())
    if n:
      out[name] = {"figures": int((views == v).sum())}
      out[name].update({c: 100.0 * classes[c][m].sum() / n for c in CLASSES})
  return out


def _shares(classes: Mapping[str, np.ndarray], valid: np.ndarray, names: Sequence[str]) -> dict:
  """{class: {"all": %, joint: %}} of the valid joints."""
  out = {}
  for c in CLASSES:
    row = {"all": 100.0 * classes[c][valid].mean() if valid.any() else float("nan")}
    for j, jn in enumerate(names):
      v = valid[:, j]
      row[jn] = 100.0 * classes[c][v, j].mean() if v.any() else float("nan")
    out[c] = row
  return out


def _refinement(ok_coarse, ok_cascade, units, valid) -> dict:
  """The coarse-error bins and the fixed / broken counts (module docstring), from
  `classify`'s `correct` of both estimates, the coarse error in units of the
  threshold and the evaluated joints, all `(N, J)`."""
  bins = []
  for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
    m = valid & (units >= lo) & (units < hi)
    n = int(m.sum())
    bins.append(
      {
        "coarse_error": [lo, hi],
        "share": 100.0 * n / max(int(valid.sum()), 1),
        "coarse_correct": 100.0 * ok_coarse[m].mean() if n else float("nan"),
        "cascade_correct": 100.0 * ok_cascade[m].mean() if n else float("nan"),
      }
    )
  return {
    "bins": bins,
    "fixed": int((valid & ~ok_coarse & ok_cascade).sum()),
    "broken": int((valid & ok_coarse & ~ok_cascade).sum()),
    "num_joints": int(valid.sum()),
  }


def evaluate(
  preds: Mapping[str, np.ndarray],
  *,
  skeleton: joints_lib.Skeleton,
  pools: metrics.Pools,
  normalizer: str = "head_size",
  alpha: float = 0.5,
) -> dict:
  """{"normalizer", "alpha", for each estimate m: {class: {"all": %, joint: %}},
  and with both coarse and cascade "refinement": {"bins": [{"coarse_error": [lo, hi]
  (units of the threshold), "share", "coarse_correct", "cascade_correct"} (%)],
  "fixed", "broken", "num_joints"}, and "by_view": {m: {view: {"figures": n,
  class: %}}} for "front" and "back" (`view`; empty where no figure's view is
  known)}. `pools` is unused (the classes are per joint)."""
  del pools
  gt, valid, norm = preds["joints"], preds["joints_valid"] > 0, preds[normalizer]
  perm = skeleton.flip_permutation
  views = view(gt, valid, skeleton)
  any_view = bool((views != 0).any())  # none for a skeleton without the joints it reads
  result: dict = {"normalizer": normalizer, "alpha": float(alpha), "by_view": {}}
  correct = {}
  for m in estimates(preds):
    classes, evaluated = classify(preds[m], gt, valid, norm, alpha, perm)
    result[m] = _shares(classes, evaluated, skeleton.model_joints)
    if any_view:
      result["by_view"][m] = _by_view(classes, evaluated, views)
    correct[m] = classes["correct"]  # `evaluated` is the same for every estimate
  if "coarse" in correct and "cascade" in correct:
    units = metrics.normalized_distances(preds["coarse"], gt, norm) / alpha
    result["refinement"] = _refinement(correct["coarse"], correct["cascade"], units, evaluated)
  return result


def scalars(result: Mapping) -> Iterator[tuple[str, float]]:
  for m in estimates(result):
    for c in CLASSES:
      yield f"{m}/{c}", result[m][c]["all"]
  for m, views in result.get("by_view", {}).items():
    for v, row in views.items():
      yield f"{m}/{v}/correct", row["correct"]
      yield f"{m}/{v}/swap", row["swap"]
  if "refinement" in result:
    yield "fixed", result["refinement"]["fixed"]
    yield "broken", result["refinement"]["broken"]


def format_table(result: Mapping) -> str:
  lines = [
    f"errors (% of annotated joints, threshold {result['alpha']:g} × {result['normalizer']}):"
  ]
  rows = {f"{m} {c}": result[m][c] for m in estimates(result) for c in CLASSES}
  lines.append(metrics.format_rows(rows))
  by_view = result.get("by_view", {})
  if by_view:
    lines.append(
      "by view (% of that view's joints)  figures " + " ".join(f"{c:>7s}" for c in CLASSES)
    )
    for m, views in by_view.items():
      for v, row in views.items():
        shares = " ".join(f"{row[c]:7.1f}" for c in CLASSES)
        lines.append(f"{m + ' ' + v:>33s} {row['figures']:8d} {shares}")
  ref = result.get("refinement")
  if ref:
    lines.append("coarse error (× threshold)  share  coarse correct  cascade correct")
    for b in ref["bins"]:
      lo, hi = b["coarse_error"]
      span = f"[{lo:g}, {hi:g})"
      lines.append(
        f"{span:>26s} {b['share']:6.1f} {b['coarse_correct']:15.1f} {b['cascade_correct']:16.1f}"
      )
    lines.append(
      f"the cascade fixes {ref['fixed']} and breaks {ref['broken']} of {ref['num_joints']} joints"
    )
  return "\n".join(lines)
