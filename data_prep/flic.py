"""FLIC (Sapp & Taskar, CVPR 2013) as a TFDS builder: `flic`, splits `train`, `test`.

Manual dir (see `data_prep/manual_dirs.md`): `examples.mat` and `images/<filepath>`.

Frames. `examples.mat` comes from MATLAB code (MODEC) that draws `coords` and
`torsobox` over `imread` images, where pixel centres sit at 1-based integers; the
values are sub-pixel (rescaled crowd clicks), so the data alone cannot prove the
base, and we follow the MATLAB convention: every coordinate is converted to our
0-based frame with `- 1`.

Per example (one row of `examples.mat`, file order, `istrain` → `train`, `istest` →
`test`): the 11 annotated `coords` columns (`joints.FLIC_COORD_COLUMNS`); NaN marks
a missing joint (valid False, stored 0); FLIC has no occlusion flag, so
`joints_visible = joints_valid`. `center` is the torso-box centre, `scale` the
torso-box height / (0.3 · 200) (a torso spans about 0.3 of a standing person's
height), `torso_size` ‖r_shoulder − l_hip‖, no head box. `poselet_hit_idx` and
`imgdims` are not stored (`image_hw` is read from the image itself).

Checks (`docs/data.md`): x or y alone NaN, an infinite coordinate, a torso box
that is not 4 finite numbers or is upside down (x2 <= x1 or y2 <= y1), or whose
centre lies more than an image side outside the image skip the row; a joint more
than an image side outside the image is marked invalid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import common
from heatpose_jax.data import joints as joints_lib

ANNOTATIONS = "examples.mat"
SKELETON = joints_lib.SKELETONS["flic"]
# FLIC's torso box spans shoulders to hips: about 0.3 of a standing person's height.
TORSO_FRACTION_OF_HEIGHT = 0.3
_FIELDS = ("moviename", "coords", "filepath", "currframe", "torsobox", "istrain", "istest")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download FLIC.zip from https://bensapp.github.io/flic-dataset.html (Sapp & Taskar,
CVPR 2013), unzip it, and pass its folder as the manual dir. It must hold
`examples.mat` (the annotations) and `images/` (the 5003 JPEG frames named by each
example's `filepath`).
"""


def read_examples(mat_path) -> list[dict]:
  """Parses FLIC's `examples.mat`, one dict per row, in file order.

  Args:
    mat_path: path of `examples.mat`.

  Returns:
    Row dicts with `row` (0-based position in the file), `filepath`, `moviename`
    (str), `currframe` (int), `istrain`, `istest` (bool), `joints` float32 (11, 2)
    (x, y) 0-based pixels in annotated order, 0 where missing, `joints_valid`
    bool (11,), `torso_box` float32 (4,) x1, y1, x2, y2 0-based, `problem`
    (None, or why the row cannot be used) and `detail` (the values behind it).

  Raises:
    FileNotFoundError: the file is absent.
    common.DataError: it is not a MATLAB file with an `examples` struct array holding
      FLIC's fields.
  """
  mat_path = Path(mat_path)
  mat = common.load_mat(mat_path, "FLIC", "examples", squeeze_me=True, struct_as_record=False)
  examples = np.atleast_1d(mat["examples"])
  if examples.size:
    missing = [f for f in _FIELDS if f not in getattr(examples[0], "_fieldnames", ())]
    if missing:
      raise common.DataError(f"{mat_path}: examples lack the fields {missing}")

  cols = list(joints_lib.FLIC_COORD_COLUMNS)
  rows = []
  for i, ex in enumerate(examples):
    coords = np.asarray(ex.coords, np.float64)
    if coords.shape != (2, 29):
      raise common.DataError(
        f"{mat_path}: examples({i + 1}).coords has shape {coords.shape}, not (2, 29)"
      )
    pts = coords[:, cols].T - 1.0  # (11, 2), MATLAB 1-based -> 0-based
    nan = np.isnan(pts)
    valid = ~nan.any(1)
    box = np.asarray(ex.torsobox, np.float64).ravel() - 1.0
    problem, detail = None, ""
    if np.any(nan.any(1) & ~nan.all(1)):
      problem = "NaN coordinates on annotated joints (x or y alone)"
    elif problem := common.box_problem(box, "torso box"):
      detail = f"torsobox {common.fmt(box + 1)} (1-based)"
    else:
      problem = common.check_joints(pts, valid)
    rows.append(
      {
        "row": i,
        "filepath": common.mat_text(ex.filepath),
        "moviename": common.mat_text(ex.moviename),
        "currframe": int(ex.currframe),
        "istrain": bool(ex.istrain),
        "istest": bool(ex.istest),
        "joints": np.where(valid[:, None], pts, 0.0).astype(np.float32),
        "joints_valid": valid,
        "torso_box": (box if box.shape == (4,) else np.zeros(4)).astype(np.float32),
        "problem": problem,
        "detail": detail,
      }
    )
  return rows


def split_rows(rows: list[dict], split: str) -> list[dict]:
  """The rows of `split` (`train`: istrain, `test`: istest), in file order."""
  key = {"train": "istrain", "test": "istest"}[split]
  return [r for r in rows if r[key]]


class Flic(common.ArrayRecordBuilder):
  """FLIC: 3987 train / 1016 test frames, 11 annotated upper-body joints."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: 0-based joints, torso box, file order."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    t = tfds.features.Tensor
    return common.dataset_info(
      self,
      description="FLIC frames with 11 annotated joints (0-based pixels) and torso boxes.",
      features=common.common_features(
        len(SKELETON.annotated),
        moviename=t(shape=(), dtype=np.object_),
        currframe=t(shape=(), dtype=np.int64),
      ),
      homepage="https://bensapp.github.io/flic-dataset.html",
    )

  def _split_generators(self, dl_manager):
    root = common.manual_paths(dl_manager, "flic", ANNOTATIONS, MANUAL_DOWNLOAD_INSTRUCTIONS)
    rows = read_examples(root / ANNOTATIONS)
    return {s: self._generate_examples(root, split_rows(rows, s), s) for s in ("train", "test")}

  def _generate_examples(self, root: Path, rows: list[dict], split: str):
    skips = common.new_skip_counter(self, split)

    def candidates():
      for r in rows:
        where = f"examples({r['row'] + 1}) {r['filepath']!r}"
        if r["problem"]:
          skips.skip(r["problem"], where, r["detail"])
          continue
        try:
          data, hw = common.read_image(root / common.IMAGES / r["filepath"])
        except (FileNotFoundError, ValueError) as e:
          common.skip_image(skips, e, where)
          continue
        joints, valid, problem = common.clean_joints(
          SKELETON, r["joints"], r["joints_valid"], hw, skips, where
        )
        if problem:
          skips.skip(problem, where)
          continue
        box = r["torso_box"]
        ex = {
          "image": data,
          "image_hw": hw,
          "joints": joints,
          "joints_valid": valid,
          "joints_visible": valid,
          "center": ((box[:2] + box[2:]) / 2).astype(np.float32),
          "scale": np.float32((box[3] - box[1]) / (TORSO_FRACTION_OF_HEIGHT * 200.0)),
          "head_box": np.zeros(4, np.float32),
          "torso_box": box,
          "head_size": np.float32(0.0),
          "torso_size": common.torso_size(SKELETON, joints, valid),
          "moviename": r["moviename"].encode(),
          "currframe": r["currframe"],
        }
        yield where, ex, True

    return common.numbered(skips, candidates())
