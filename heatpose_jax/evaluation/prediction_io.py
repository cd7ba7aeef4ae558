"""Predictions and ground truth in the community file formats (MPII, FLIC).

Frames. Every array this module returns or takes is in the design frame: (x, y),
0-based pixels of the original image, pixel centres at integers. The files use
MATLAB's 1-based pixels (MPII's tools, the stacked-hourglass and HRNet code,
FLIC's examples.mat), so readers subtract 1 and writers add 1. Predictions and
ground truth always get the same shift, and PCK/PCKh only use differences, so the
scores equal those of a raw comparison of the files.

Prediction files hold one array under the key `preds`, in a `.mat` file (MATLAB
v5 via scipy; v7.3 via h5py, whose axes are reversed back to MATLAB's order) or
an `.h5` file (h5py, as stored). Accepted layouts, J = 16 (MPII) or 11 (FLIC):
`(N, J, 2)` (hourglass/HRNet Python and Torch), `(J, 2, N)` (MPII's
`pos_pred_src`), `(2, J, N)` (Torch `.h5` read by MATLAB), named `NJ2`, `J2N`,
`2JN` (`LAYOUTS`). A known example count (from the ground truth) first rules out
layouts with another N. The only shape that still fits two layouts is
`(2, J, 2)` (N = 2 as `(N, J, 2)` or as `(2, J, N)`): it is never guessed (the
wrong guess scores 0 silently) but refused unless the caller names the layout
(`layout=`, `--predictions_layout`). NaN predictions are allowed and never
count as correct.

Ground truth:
* MPII, stacked-hourglass `valid.h5` (Tompson et al.'s 2958-person validation
  split, written by `pose-hg-train/src/misc/convert_annot.py`; keys `index`,
  `person`, `imgname` (bytes), `center`, `scale`, `part`, `visible`, `normalize`,
  `torsoangle`, all float64 but `imgname`): `part` (N, 16, 2) 1-based pixels
  straight from the MPII .mat (truncated to integers), a missing joint stored as
  (0, 0) and a person without annopoints as (-1, -1) — the format has no other
  missing marker, so these are read as "not annotated"; `visible` (N, 16);
  `normalize` (N,) = 0.6 × head-box diagonal (`mpii.py: normalization()`, i.e.
  the PCKh head size itself, used directly as the normalizer). Only `part` and
  `normalize` are required.
* MPII, HRNet `gt_valid.mat` (= pytorch-pose's `detections_our_format.mat` without
  `pos_pred_src`; MATLAB v5 read by `scipy.io.loadmat`): `pos_gt_src` (16, 2, N)
  1-based, `jnt_missing` (16, N) 1 = missing, `headboxes_src` (2, 2, N) with
  `[0] = (x1, y1)`, `[1] = (x2, y2)`, and `dataset_joints`, a 1×16 cell array of
  MPII's short names (`rank … pelv thor neck head … lwri`; `thrx`, the
  stacked-hourglass spelling, is accepted for `thor`), used to permute the joint
  order to MPII's ids; other keys are ignored.
* FLIC, MODEC's `examples.mat`: the `istest` (or `istrain`) rows in file order, the
  11 annotated `coords` columns (`joints.FLIC_COORD_COLUMNS`); NaN = not
  annotated. The labels and torso are those of a protocol (`flic_labels.PROTOCOLS`).

Every problem with a file (unreadable, missing key, wrong shape, count mismatch,
non-finite coordinates of an annotated joint, no example with a normalizer > 0)
raises `ValueError` with a one-line message that names the file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from heatpose_jax.data import flic_labels
from heatpose_jax.data import joints as joints_lib

MPII_NUM_JOINTS = 16
FLIC_NUM_JOINTS = 11
PREDICTIONS_KEY = "preds"

# `dataset_joints` names of gt_valid.mat, in MPII joint-id (= our model) order.
_MPII_SHORT_NAMES = (
  "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
  "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip
# pose-hg-train's `mpii.py` spells the thorax `thrx`.
_NAME_ALIASES = {"thrx": "thor"}


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Ground truth of an evaluation split, in the design frame.

  Attributes:
    joints: (N, A, 2) float64 (x, y), 0-based original-image pixels, annotated
      order (MPII: joint ids; FLIC: examples.mat's 11 columns); 0 where missing.
    valid: (N, A) bool, annotated (occluded or not).
    normalizer: (N,) float64 PCKh head size (MPII) or the protocol's torso size
      (FLIC), pixels; ≤ 0 where undefined (such rows are not scored).
    visible: (N, A) bool where the file says, else None.
    index: (N,) int64 the example's row in the source file (FLIC: examples.mat
      row) or MPII image index where the file has one, else None.
    protocol: FLIC: the protocol of `joints` and `normalizer`; MPII: None.
    relabelled: FLIC: (N,) bool rows whose labels the protocol swapped; else None.
  """

  joints: np.ndarray
  valid: np.ndarray
  normalizer: np.ndarray
  visible: np.ndarray | None = None
  index: np.ndarray | None = None
  protocol: str | None = None
  relabelled: np.ndarray | None = None

  def __len__(self) -> int:
    return self.joints.shape[0]


def _suffix(path: Path) -> str:
  s = path.suffix.lower()
  if s not in (".mat", ".h5", ".hdf5"):
    raise ValueError(f"{path}: unsupported file type {s or '(none)'!r}; expected .mat or .h5")
  return s


def _load_arrays(path: str | os.PathLike, keys: tuple[str, ...], optional=()) -> dict:
  """Numeric arrays `keys` (required) and `optional` from a .mat or .h5 file."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"{path}: no such file")
  suffix = _suffix(path)
  out = {}
  v73 = False
  if suffix == ".mat":
    try:
      data = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 = HDF5
      data, v73 = None, True
    except Exception as e:  # scipy raises several types for a malformed file
      raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    if not v73:
      for k in keys + tuple(optional):
        if k in data:
          out[k] = data[k]
  if suffix != ".mat" or v73:
    try:
      with h5py.File(path, "r") as f:
        for k in keys + tuple(optional):
          if k in f and isinstance(f[k], h5py.Dataset):
            # MATLAB v7.3 stores column-major: reverse the axes to MATLAB's shape.
            out[k] = f[k][()].T if v73 else f[k][()]
    except OSError as e:
      raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
  missing = [k for k in keys if k not in out]
  if missing:
    raise ValueError(f"{path}: missing key(s) {missing}; found {_keys(path)}")
  return out


def _keys(path: Path) -> list[str]:
  try:
    if path.suffix.lower() == ".mat":
      try:
        return sorted(k for k in scipy.io.loadmat(path) if not k.startswith("__"))
      except NotImplementedError:
        pass
    with h5py.File(path, "r") as f:
      return sorted(f.keys())
  except Exception:  # only used to word an error message
    return []


def _numeric(path, key: str, arr, shape_text: str) -> np.ndarray:
  arr = np.asarray(arr)
  if arr.dtype.kind not in "biuf":
    raise ValueError(f"{path}: {key!r} has non-numeric dtype {arr.dtype}; expected {shape_text}")
  return arr.astype(np.float64)


# A predictions array's layout → its shape with J joints and N examples, and the
# transpose that makes it (N, J, 2).
LAYOUTS = {
  "NJ2": (lambda j: f"(N, {j}, 2)", (0, 1, 2)),
  "J2N": (lambda j: f"({j}, 2, N)", (2, 0, 1)),
  "2JN": (lambda j: f"(2, {j}, N)", (2, 1, 0)),
}


def _fits(shape: tuple[int, ...], layout: str, j: int) -> bool:
  if len(shape) != 3:
    return False
  a, b, c = shape
  return {"NJ2": (b, c) == (j, 2), "J2N": (a, b) == (j, 2), "2JN": (a, b) == (2, j)}[layout]


def _to_njc(
  path, arr, num_joints: int, num_examples: int | None, layout: str | None = None
) -> np.ndarray:
  """Resolves a predictions layout to (N, J, 2); see the module docstring."""
  j = num_joints
  expected = f"(N, {j}, 2), ({j}, 2, N) or (2, {j}, N)"
  if layout is not None and layout not in LAYOUTS:
    raise ValueError(f"unknown predictions layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
  arr = _numeric(path, PREDICTIONS_KEY, arr, expected)
  names = [k for k in LAYOUTS if _fits(arr.shape, k, j)] if layout is None else [layout]
  if layout is not None and not _fits(arr.shape, layout, j):
    raise ValueError(
      f"{path}: {PREDICTIONS_KEY!r} has shape {arr.shape}, not the layout {layout} "
      f"{LAYOUTS[layout][0](j)}"
    )
  cands = [arr.transpose(LAYOUTS[k][1]) for k in names]
  if not cands:
    raise ValueError(f"{path}: {PREDICTIONS_KEY!r} has shape {arr.shape}; expected {expected}")
  if num_examples is not None:
    fits = [x for x in cands if x.shape[0] == num_examples]
    if not fits:
      raise ValueError(
        f"{path}: {cands[0].shape[0]} predictions (shape {arr.shape}) but the ground truth "
        f"has {num_examples} examples"
      )
    names = [k for k, x in zip(names, cands, strict=True) if x.shape[0] == num_examples]
    cands = fits
  if len(cands) > 1:
    readings = " or as ".join(
      f"{LAYOUTS[k][0](j)} with N = {x.shape[0]}" for k, x in zip(names, cands, strict=True)
    )
    raise ValueError(
      f"{path}: {PREDICTIONS_KEY!r} has shape {arr.shape}, which reads as {readings}; "
      f"not guessed: name the layout (--predictions_layout={' or '.join(names)})"
    )
  return cands[0]


def read_predictions(
  path: str | os.PathLike,
  num_joints: int,
  num_examples: int | None = None,
  layout: str | None = None,
) -> np.ndarray:
  """Predictions `preds` as stored (the file's own frame, no shift).

  Args:
    path: a `.mat` or `.h5` file.
    num_joints: J (16 MPII, 11 FLIC).
    num_examples: N expected (the ground truth's count), or None.
    layout: "NJ2", "J2N" or "2JN" (`LAYOUTS`); None: from the shape, refused
      when two layouts fit it.

  Returns:
    (N, J, 2) float64 (x, y).
  """
  data = _load_arrays(path, (PREDICTIONS_KEY,))
  return _to_njc(path, data[PREDICTIONS_KEY], num_joints, num_examples, layout)


def read_mpii_predictions(
  path: str | os.PathLike, num_examples: int | None = None, layout: str | None = None
) -> np.ndarray:
  """MPII predictions, 1-based in the file → (N, 16, 2) 0-based (x, y)."""
  return read_predictions(path, MPII_NUM_JOINTS, num_examples, layout) - 1.0


def read_flic_predictions(
  path: str | os.PathLike, num_examples: int | None = None, layout: str | None = None
) -> np.ndarray:
  """FLIC predictions of the 11 annotated joints (examples.mat column order) in
  examples.mat's pixel frame → (N, 11, 2) 0-based (x, y). N = the test examples
  in examples.mat's file order."""
  return read_predictions(path, FLIC_NUM_JOINTS, num_examples, layout) - 1.0


def write_predictions(path: str | os.PathLike, preds_file_frame, num_joints: int) -> None:
  """Writes (N, J, 2) float64 under `preds` to `.mat` (v5) or `.h5`, unchanged."""
  path = Path(path)
  preds = np.asarray(preds_file_frame, np.float64)
  if preds.ndim != 3 or preds.shape[1:] != (num_joints, 2):
    raise ValueError(f"{path}: predictions have shape {preds.shape}; expected (N, {num_joints}, 2)")
  if _suffix(path) == ".mat":
    scipy.io.savemat(path, {PREDICTIONS_KEY: preds})
  else:
    with h5py.File(path, "w") as f:
      f.create_dataset(PREDICTIONS_KEY, data=preds)


def write_mpii_predictions(path: str | os.PathLike, preds_0based) -> None:
  """Writes MPII predictions as the community tools read them.

  Args:
    path: `.mat` or `.h5`.
    preds_0based: (N, 16, 2) (x, y), 0-based original-image pixels, MPII joint
      ids, rows in the ground truth's order (e.g. valid.h5). Stored 1-based,
      shape (N, 16, 2), key `preds`.
  """
  write_predictions(path, np.asarray(preds_0based, np.float64) + 1.0, MPII_NUM_JOINTS)


def write_flic_predictions(path: str | os.PathLike, preds_0based) -> None:
  """Writes FLIC predictions in examples.mat's frame.

  Args:
    path: `.mat` or `.h5`.
    preds_0based: (N, 11, 2) (x, y), 0-based original-image pixels (the design
      frame: examples.mat's coords − 1), the 11 annotated joints in
      `joints.FLIC_COORD_COLUMNS` order (a 7-joint model leaves the hips at any
      value: they are not scored), rows = examples.mat's test examples in file
      order. Stored in examples.mat's frame (+1), shape (N, 11, 2), key `preds`.
  """
  write_predictions(path, np.asarray(preds_0based, np.float64) + 1.0, FLIC_NUM_JOINTS)


# --- ground truth --------------------------------------------------------------


def _check_shape(path, key, arr, shape, text):
  if arr.shape != shape:
    raise ValueError(f"{path}: {key!r} has shape {arr.shape}; expected {text}")


def _check_finite(path, key: str, joints, annotated, names, rows=None) -> None:
  """Annotated joints must have finite coordinates.

  Args: joints (N, A, 2), annotated (N, A), names (A,), rows (N,) the file rows
  (default 0…N−1), used to word the message.
  """
  bad = annotated & ~np.isfinite(joints).all(-1)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    row = i if rows is None else rows[i]
    raise ValueError(
      f"{path}: {key!r} has non-finite coordinates on {int(bad.sum())} annotated joint(s); "
      f"first: example {row} (0-based), {names[j]} = {joints[i, j].tolist()}"
    )


def _check_normalizer(path, key: str, norm, what: str) -> None:
  """Some row must have a normalizer > 0, else every score would be NaN."""
  if not (np.isfinite(norm) & (norm > 0)).any():
    raise ValueError(f"{path}: {key!r} gives no example a {what} > 0 ({norm.size} examples)")


def read_mpii_ground_truth(path: str | os.PathLike) -> GroundTruth:
  """MPII ground truth from a stacked-hourglass `valid.h5` or HRNet `gt_valid.mat`.

  Returns:
    `GroundTruth` with (N, 16, 2) 0-based joints in MPII joint-id order and the
    PCKh head size as the normalizer.
  """
  path = Path(path)
  if _suffix(path) == ".mat":
    return _read_hrnet_gt(path)
  data = _load_arrays(path, ("part", "normalize"), optional=("visible", "index"))
  part = _numeric(path, "part", data["part"], "(N, 16, 2)")
  if part.ndim != 3 or part.shape[1:] != (MPII_NUM_JOINTS, 2):
    raise ValueError(f"{path}: 'part' has shape {part.shape}; expected (N, 16, 2)")
  n = part.shape[0]
  norm = _numeric(path, "normalize", data["normalize"], "(N,)").reshape(-1)
  _check_shape(path, "normalize", norm, (n,), f"({n},) like 'part'")
  # The format's only missing markers: (0, 0) missing joint, (-1, -1) no annopoints.
  missing = np.all(part == 0, -1) | np.all(part == -1, -1)
  _check_finite(path, "part", part, ~missing, joints_lib.SKELETONS["mpii"].annotated)
  _check_normalizer(path, "normalize", norm, "head size")
  visible = None
  if "visible" in data:
    vis = _numeric(path, "visible", data["visible"], "(N, 16)")
    _check_shape(path, "visible", vis, (n, MPII_NUM_JOINTS), f"({n}, 16)")
    visible = (vis > 0) & ~missing
  index = None
  if "index" in data and np.asarray(data["index"]).size == n:
    index = np.asarray(data["index"]).reshape(-1).astype(np.int64)
  joints = np.where(missing[..., None], 0.0, part - 1.0)
  return GroundTruth(joints, ~missing, norm, visible, index)


def _names(arr) -> list[str]:
  """`dataset_joints` → names.

  scipy loads MATLAB's 1×16 cell array of strings as a (1, 16) object array of
  (1,) str arrays; a char matrix would load as a (16,) str array.
  """
  out = []
  for x in np.asarray(arr, dtype=object).reshape(-1):
    x = np.asarray(x).reshape(-1)
    name = x[0] if x.size else ""
    name = name.decode() if isinstance(name, bytes) else str(name)
    out.append(_NAME_ALIASES.get(name.strip(), name.strip()))
  return out


def _read_hrnet_gt(path: Path) -> GroundTruth:
  data = _load_arrays(
    path, ("pos_gt_src", "jnt_missing", "headboxes_src"), optional=("dataset_joints",)
  )
  pos = _numeric(path, "pos_gt_src", data["pos_gt_src"], "(16, 2, N)")
  if pos.ndim != 3 or pos.shape[:2] != (MPII_NUM_JOINTS, 2):
    raise ValueError(f"{path}: 'pos_gt_src' has shape {pos.shape}; expected (16, 2, N)")
  n = pos.shape[2]
  miss = _numeric(path, "jnt_missing", data["jnt_missing"], "(16, N)")
  _check_shape(path, "jnt_missing", miss, (MPII_NUM_JOINTS, n), f"(16, {n})")
  boxes = _numeric(path, "headboxes_src", data["headboxes_src"], "(2, 2, N)")
  _check_shape(path, "headboxes_src", boxes, (2, 2, n), f"(2, 2, {n})")
  joints = pos.transpose(2, 0, 1) - 1.0
  valid = miss.T == 0
  perm = np.arange(MPII_NUM_JOINTS)
  if "dataset_joints" in data:
    names = _names(data["dataset_joints"])
    if sorted(names) != sorted(_MPII_SHORT_NAMES):
      raise ValueError(f"{path}: 'dataset_joints' {names} are not MPII's 16 joints")
    perm = np.array([names.index(k) for k in _MPII_SHORT_NAMES])
  joints, valid = joints[:, perm], valid[:, perm]
  _check_finite(path, "pos_gt_src", joints, valid, joints_lib.SKELETONS["mpii"].annotated)
  joints = np.where(valid[..., None], joints, 0.0)
  # headboxes_src[0] = (x1, y1), [1] = (x2, y2) → (N, 4) x1, y1, x2, y2.
  head = joints_lib.head_size_from_boxes(boxes.transpose(2, 0, 1).reshape(n, 4))
  _check_normalizer(path, "headboxes_src", head, "head size")
  return GroundTruth(joints, valid, head)


def _read_flic_examples(path: Path, flag: str) -> tuple[np.ndarray, np.ndarray]:
  """examples.mat's `coords` `(N, 2, 29)` (1-based, NaN: not annotated) and the rows
  with `flag` ('istest' or 'istrain') set; a one-line ValueError naming the file and
  the field that is missing or malformed."""
  if not path.is_file():
    raise ValueError(f"{path}: no such file")
  try:
    data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
  except Exception as e:
    raise ValueError(f"{path}: not a readable MATLAB v5 .mat file ({e})") from None
  if "examples" not in data:
    found = sorted(k for k in data if not k.startswith("__"))
    raise ValueError(f"{path}: missing key 'examples'; found {found}")
  ex = np.atleast_1d(data["examples"])
  try:
    coords = np.stack([np.asarray(e.coords, np.float64) for e in ex])
    rows = np.flatnonzero([bool(getattr(e, flag)) for e in ex])
  except AttributeError as e:
    raise ValueError(f"{path}: 'examples' lacks a field ({e})") from None
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: 'coords' are not (2, 29) numbers in every example ({e})") from None
  if coords.shape[1:] != (2, 29):
    raise ValueError(f"{path}: 'coords' have shape {coords.shape[1:]}; expected (2, 29)")
  if rows.size == 0:
    raise ValueError(f"{path}: no example has {flag!r} set")
  return coords, rows


def read_flic_ground_truth(
  path: str | os.PathLike, split: str = "test", protocol: str = "modec"
) -> GroundTruth:
  """FLIC ground truth from MODEC's `examples.mat`, as `protocol` defines it.

  Args:
    path: examples.mat (MATLAB v5, a 1×N struct array `examples` with fields
      `coords` (2, 29), `istrain`, `istest`, ...).
    split: "test" (`istest` rows, 1016 in the real file) or "train" (`istrain`).
    protocol: one of `flic_labels.PROTOCOLS` (see `flic_labels.protocol_labels`):
      "modec" flips the arm labels of backward-facing people and uses ‖l_shoulder
      − r_hip‖; "hourglass" keeps examples.mat's labels as stored and uses
      ‖r_shoulder − l_hip‖; "observer_centric" swaps every left/right pair of
      people facing away.

  Returns:
    `GroundTruth`: joints (N, 11, 2) 0-based (coords − 1), the protocol's labels
    in `joints.FLIC_COORD_COLUMNS` order; valid = annotated (coordinates not
    NaN); the protocol's torso size as normalizer; index = the 0-based row in
    examples.mat; `protocol`; `relabelled` = the rows whose labels the protocol
    swapped; rows in file order.
  """
  path = Path(path)
  if split not in ("test", "train"):
    raise ValueError(f"unknown FLIC split {split!r}; expected 'test' or 'train'")
  if protocol not in flic_labels.PROTOCOLS:
    raise ValueError(f"unknown FLIC protocol {protocol!r}; expected one of {flic_labels.PROTOCOLS}")
  coords, rows = _read_flic_examples(path, "istest" if split == "test" else "istrain")
  pts = coords[rows][:, :, list(joints_lib.FLIC_COORD_COLUMNS)].transpose(0, 2, 1)
  # NaN marks a joint that is not annotated; anything else must be a finite point.
  valid = ~np.isnan(pts).all(-1)
  names = joints_lib.SKELETONS["flic"].annotated
  _check_finite(path, "coords", pts, valid, names, rows)
  labels = flic_labels.protocol_labels(np.where(valid[..., None], pts - 1.0, 0.0), valid, protocol)
  torso = " − ".join(flic_labels.TORSO[protocol])
  _check_normalizer(path, "coords", labels.torso, f"{protocol} torso ‖{torso}‖")
  return GroundTruth(
    labels.joints,
    labels.valid,
    labels.torso,
    index=rows.astype(np.int64),
    protocol=protocol,
    relabelled=labels.relabelled,
  )
