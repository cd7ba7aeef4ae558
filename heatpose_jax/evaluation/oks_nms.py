"""OKS-based non-maximum suppression of one image's poses: HRNet's test-time step on
a detector's boxes (`lib/nms/nms.py: oks_nms`, threshold 0.9; mmpose's `oks_nms`).

  keep = oks_nms(keypoints, scores, areas, joint_sigmas(names), threshold=0.9)

A detector gives several overlapping boxes per person, so top-down prediction gives
several poses of that person. Greedy, as HRNet: the highest-scoring pose is kept,
every remaining pose whose OKS to it is > `threshold` is dropped (one at exactly the
threshold stays), and so on with the next remaining pose.

OKS of two poses g, d (HRNet's `oks_iou`; mmpose's):

  e_k = |g_k − d_k|² / (2 · (2σ_k)² · ((a_g + a_d) / 2 + eps)),   OKS = mean_k exp(−e_k)

k over the K joints, |·| in image pixels, (2σ_k)² pycocotools' variances, a the
poses' areas (their mean: HRNet's code, which makes OKS symmetric), eps =
np.spacing(1). With a_g = a_d this is pycocotools' `computeOks` with g as a ground
truth labelled at every joint and `area` a_g. With `keypoint_threshold` only the
joints scoring above it in both poses count (mmpose's `vis_thr`; HRNet's
`list(vg > t) and list(vd > t)` is, in Python, the second pose's mask alone), and
two poses without such a joint have OKS 0. HRNet calls it without one.

What the caller chooses (`experiments.predict --oks_nms`): a pose's area is its
detection box's w · h (HRNet: its crop box, the detection box widened to the
input's aspect and padded 1.25×) and its score the written result's, box score ×
mean joint score (HRNet: the mean of the joint scores above 0.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from heatpose_jax.data import coco_format


def joint_sigmas(names: Sequence[str]) -> np.ndarray:
  """(K,) float64 OKS sigmas of the joints `names`, chosen as the OKS evaluator
  chooses them without given sigmas (`coco_format.oks_sigmas`: COCO's 17 for COCO's
  joints, CrowdPose's 14 for CrowdPose's, else each part's value).

  Raises:
    ValueError: one line naming the joints without a known sigma.
  """
  try:
    return coco_format.oks_sigmas(names)[0]
  except coco_format.UnknownSigmas as e:
    raise ValueError(
      f"no OKS sigma known for {', '.join(map(repr, e.unknown))} (of the {len(names)} joints)"
    ) from None


def pairwise_oks(
  keypoints: np.ndarray,
  areas: np.ndarray,
  sigmas: np.ndarray,
  keypoint_threshold: float | None = None,
) -> np.ndarray:
  """(N, N) OKS of every two poses (module docstring), symmetric, 1 on the diagonal
  (0 there too where a pose has no joint above `keypoint_threshold`).

  Args:
    keypoints: (N, K, 3) x, y, score; x, y image pixels, 0-based.
    areas: (N,) each pose's area, pixels².
    sigmas: (K,) OKS sigmas.
    keypoint_threshold: None (every joint), or count only the joints scoring above
      it in both poses.
  """
  keypoints = np.asarray(keypoints, np.float64)
  areas = np.asarray(areas, np.float64)
  variances = (2 * np.asarray(sigmas, np.float64)) ** 2
  xy = keypoints[..., :2]
  d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)  # (N, N, K)
  scale = (areas[:, None] + areas[None]) / 2 + np.spacing(1)
  similarity = np.exp(-d2 / variances / scale[..., None] / 2)
  if keypoint_threshold is None:
    return similarity.mean(-1)
  above = keypoints[..., 2] > keypoint_threshold
  both = above[:, None] & above[None]
  count = both.sum(-1)
  return np.where(count > 0, (similarity * both).sum(-1) / np.maximum(count, 1), 0.0)


def oks_nms(
  keypoints: np.ndarray,
  scores: np.ndarray,
  areas: np.ndarray,
  sigmas: np.ndarray,
  threshold: float,
  keypoint_threshold: float | None = None,
) -> np.ndarray:
  """The poses that OKS-NMS keeps (module docstring), of one image.

  Args:
    keypoints: (N, K, 3) x, y, score; x, y image pixels, 0-based.
    scores: (N,) pose scores; higher wins.
    areas: (N,) each pose's area (OKS's scale), pixels².
    sigmas: (K,) OKS sigmas (`joint_sigmas`).
    threshold: a pose with OKS > it to a kept pose is dropped.
    keypoint_threshold: None, or count only the joints scoring above it in both poses.

  Returns:
    (M,) int64 indices of the kept poses, by decreasing score (ties: file order).
  """
  if len(scores) == 0:
    return np.zeros((0,), np.int64)
  return suppress(pairwise_oks(keypoints, areas, sigmas, keypoint_threshold), scores, threshold)


def suppress(oks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
  """`oks_nms`' greedy step on a `pairwise_oks` matrix `(N, N)`: the kept indices,
  by decreasing `scores` (ties: file order)."""
  scores = np.asarray(scores, np.float64)
  dropped = np.zeros(len(scores), bool)
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if not dropped[i]:
      keep.append(i)
      dropped |= oks[i] > threshold  # marks i and earlier ones too: already decided
  return np.array(keep, np.int64)
