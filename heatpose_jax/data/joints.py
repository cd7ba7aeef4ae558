"""Joint definitions of every dataset: names, flips, torso and head joints, and
the normalizers the labels give (PCK's torso size, PCKh's head size).

Two orders exist per dataset:
  * the *annotated* order: the joints a dataset builder stores, in the order of
    the official annotation file (FLIC's 11 annotated `coords` columns, MPII's
    16 joint ids, LSP's 14 rows);
  * the *model* order: the joints the network predicts, `annotated[model]`.

Every index below is into the model order unless its name says `annotated`.
One frozen dataclass per dataset, kept in a visible dict: `SKELETONS[name]`; each
dataset's spec (`dataset_specs.SPECS`) holds its skeleton.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# MPII head size = SC_BIAS x head-box diagonal (`util_get_head_size` in the toolkit).
HEAD_SIZE_FACTOR = 0.6


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """The joints of one dataset.

  Attributes:
    name: dataset name (`flic`, `mpii`, `lsp`, `synthetic`, or a registered one).
    annotated: names of the joints the builder stores, in file order.
    model_joints: names of the joints the model predicts (a subset of
      `annotated`, in model order).
    flip_pairs: (left, right) name pairs swapped by a horizontal flip.
    torso: two annotated joint names whose distance is the PCK torso
      normalizer (FLIC/MODEC: right shoulder to left hip).
    scored: model joint names that the benchmark table scores.
    table: column name -> model joint names averaged in that column, in the
      order of the paper's tables.
    limbs: model joint name pairs drawn in skeleton overlays.
  """

  name: str
  annotated: tuple[str, ...]
  model_joints: tuple[str, ...]
  flip_pairs: tuple[tuple[str, str], ...]
  torso: tuple[str, str]
  scored: tuple[str, ...]
  table: tuple[tuple[str, tuple[str, ...]], ...]
  limbs: tuple[tuple[str, str], ...]

  @property
  def num_joints(self) -> int:
    """J, the number of model joints (heat-maps)."""
    return len(self.model_joints)

  @property
  def model_indices(self) -> np.ndarray:
    """(J,) int: model joint j is annotated joint `model_indices[j]`."""
    return np.array([self.annotated.index(n) for n in self.model_joints])

  def index(self, name: str) -> int:
    """Model-order index of a joint name."""
    return self.model_joints.index(name)

  @property
  def flip_permutation(self) -> np.ndarray:
    """(J,) int: after a horizontal flip, joint j takes the label of perm[j]."""
    perm = np.arange(self.num_joints)
    for left, right in self.flip_pairs:
      if left in self.model_joints and right in self.model_joints:
        i, j = self.index(left), self.index(right)
        perm[i], perm[j] = j, i
    return perm

  @property
  def annotated_flip_permutation(self) -> np.ndarray:
    """(A,) int: the flip permutation in the annotated order."""
    perm = np.arange(len(self.annotated))
    for left, right in self.flip_pairs:
      i, j = self.annotated.index(left), self.annotated.index(right)
      perm[i], perm[j] = j, i
    return perm

  @property
  def torso_annotated_indices(self) -> tuple[int, int]:
    """Annotated-order indices of the two torso-normalizer joints."""
    return self.annotated.index(self.torso[0]), self.annotated.index(self.torso[1])

  @property
  def scored_mask(self) -> np.ndarray:
    """(J,) bool: the joints the benchmark scores (MPII drops pelvis, thorax)."""
    return np.array([n in self.scored for n in self.model_joints])

  @property
  def limb_indices(self) -> np.ndarray:
    """(L, 2) int model-order index pairs for drawing."""
    return np.array([(self.index(a), self.index(b)) for a, b in self.limbs])

  def table_indices(self) -> dict[str, np.ndarray]:
    """Column name -> model-order indices averaged in that column."""
    return {col: np.array([self.index(n) for n in names]) for col, names in self.table}


_LR = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye")


def _lr_pairs(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
  return tuple(
    (f"l_{part}", f"r_{part}") for part in _LR if f"l_{part}" in names and f"r_{part}" in names
  )


# FLIC: the 11 annotated columns of examples.mat's 29-column `coords`.
FLIC_COORD_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)
_FLIC_ANNOTATED = (
  "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
  "l_hip", "r_hip", "l_eye", "r_eye", "nose",
)  # fmt: skip
# The paper's 7-joint FLIC model; its face joint is FLIC's nose label.
_FLIC_MODEL = (
  "nose", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)  # fmt: skip

_MPII = (
  "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
  "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
  "l_elbow", "l_wrist",
)  # fmt: skip
_LSP = (
  "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
  "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "upper_neck", "head_top",
)  # fmt: skip
# Synthetic people: MPII's order without pelvis and thorax.
_SYNTHETIC = tuple(n for n in _MPII if n not in ("pelvis", "thorax"))

_BODY_TABLE = (
  ("Head", ("head_top", "upper_neck")),
  ("Shoulder", ("l_shoulder", "r_shoulder")),
  ("Elbow", ("l_elbow", "r_elbow")),
  ("Wrist", ("l_wrist", "r_wrist")),
  ("Hip", ("l_hip", "r_hip")),
  ("Knee", ("l_knee", "r_knee")),
  ("Ankle", ("l_ankle", "r_ankle")),
)
_BODY_LIMBS = (
  ("head_top", "upper_neck"),
  ("upper_neck", "r_shoulder"), ("upper_neck", "l_shoulder"),
  ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
  ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
  ("r_shoulder", "r_hip"), ("l_shoulder", "l_hip"), ("r_hip", "l_hip"),
  ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
  ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
)  # fmt: skip


def _full_body(name: str, joints: tuple[str, ...], scored: tuple[str, ...]) -> Skeleton:
  """A full-body skeleton: annotated = model joints, flip pairs by name, the body
  table and limbs, PCK torso ‖r_shoulder − l_hip‖."""
  return Skeleton(
    name=name,
    annotated=joints,
    model_joints=joints,
    flip_pairs=_lr_pairs(joints),
    torso=("r_shoulder", "l_hip"),
    scored=scored,
    table=_BODY_TABLE,
    limbs=_BODY_LIMBS,
  )


SKELETONS: dict[str, Skeleton] = {
  "flic": Skeleton(
    name="flic",
    annotated=_FLIC_ANNOTATED,
    model_joints=_FLIC_MODEL,
    flip_pairs=_lr_pairs(_FLIC_ANNOTATED),
    torso=("r_shoulder", "l_hip"),
    scored=_FLIC_MODEL,
    table=(
      ("Head", ("nose",)),
      ("Shoulder", ("l_shoulder", "r_shoulder")),
      ("Elbow", ("l_elbow", "r_elbow")),
      ("Wrist", ("l_wrist", "r_wrist")),
    ),
    limbs=(
      ("nose", "l_shoulder"),
      ("nose", "r_shoulder"),
      ("l_shoulder", "r_shoulder"),
      ("l_shoulder", "l_elbow"),
      ("l_elbow", "l_wrist"),
      ("r_shoulder", "r_elbow"),
      ("r_elbow", "r_wrist"),
    ),  # fmt: skip
  ),
  "mpii": _full_body("mpii", _MPII, tuple(n for n in _MPII if n not in ("pelvis", "thorax"))),
  "lsp": _full_body("lsp", _LSP, _LSP),
  "synthetic": _full_body("synthetic", _SYNTHETIC, _SYNTHETIC),
}

# The MPII table's upper-body column pools these columns (count-weighted).
UPPER_BODY_COLUMNS = ("Shoulder", "Elbow", "Wrist")


def body_pools(skeleton: Skeleton) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """The pooled columns of the MPII-style tables: "UBody" over the joints of
  `UPPER_BODY_COLUMNS` (shoulders, elbows, wrists) and "Total" over `scored`.

  Returns:
    ((column, model joint names), ...), as `dataset_specs.DatasetSpec.pools`.
  """
  columns = dict(skeleton.table)
  upper = tuple(n for c in UPPER_BODY_COLUMNS for n in columns[c])
  return (("UBody", upper), ("Total", skeleton.scored))


def get_skeleton(name: str) -> Skeleton:
  """Looks a library dataset's skeleton up, with an error that lists the known names.

  A dataset registered at run time is known to `dataset_specs.get(name).skeleton` only.
  """
  if name not in SKELETONS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(SKELETONS)}")
  return SKELETONS[name]


def torso_size(
  gt_annotated, valid, skeleton: Skeleton, pair: tuple[str, str] | None = None
) -> np.ndarray:
  """PCK torso size: the distance between two annotated joints of the ground truth.

  Args:
    gt_annotated: (N, A, 2) ground truth (x, y), annotated order.
    valid: (N, A) bool.
    skeleton: gives the annotated order, and the default pair `skeleton.torso`
      (‖r_shoulder − l_hip‖).
    pair: two annotated joint names instead of `skeleton.torso` (FLIC's protocols:
      `flic_labels.TORSO`).

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


def head_size_from_boxes(head_boxes) -> np.ndarray:
  """MPII's PCKh normalizer from head boxes.

  Args:
    head_boxes: (N, 4) x1, y1, x2, y2 in pixels.

  Returns:
    (N,) 0.6 × ‖(x2, y2) − (x1, y1)‖ (0 for an all-zero box, so the row is excluded).
  """
  b = np.asarray(head_boxes, np.float64)
  return HEAD_SIZE_FACTOR * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
