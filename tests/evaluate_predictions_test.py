"""File formats and the evaluate_predictions launcher, on small files in the official layouts.

The fakes are written the way the community files are (checked against the real
pose-hg-train `annot/valid.h5`, pytorch-pose `detections_our_format.mat` — HRNet's
`gt_valid.mat` plus `pos_pred_src` — and FLIC's `examples.mat`), not the way the
readers would like them.
"""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from absl import flags
from absl.testing import flagsaver

from experiments import evaluate_predictions
from heatpose_jax.data import flic_labels, joints
from heatpose_jax.evaluation import metrics, prediction_io

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EXAMPLES_MAT = SHARED / "data" / "flic" / "examples.mat"
MPII = joints.SKELETONS["mpii"]
FLIC = joints.SKELETONS["flic"]
MPII_COLUMNS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "UBody", "Total"]
FLIC_COLUMNS = ["Head", "Shoulder", "Elbow", "Wrist"]
# gt_valid.mat's `dataset_joints`, as the real file spells them, in MPII's own order.
MPII_NAMES = (
  "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
  "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip

# --- fake MPII ground truth in the official layouts (1-based MATLAB pixels) ---------

N_MPII = 4
HEAD_BOX = (5.0, 5.0, 20.0, 25.0)  # 0.6 · diagonal 25 = head size 15


def _mpii_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, 16, 2) 1-based integer parts, (N, 16) missing, (N, 16) visible."""
  rng = np.random.default_rng(0)
  part = rng.integers(50, 400, (N_MPII, 16, 2)).astype(float)
  part[1, MPII.index("r_knee"), 0] = 0.0  # annotated at x = 0 (the real file has such joints)
  missing = np.zeros((N_MPII, 16), bool)
  missing[3, MPII.index("l_ankle")] = True
  visible = ~missing
  visible[2, MPII.index("r_wrist")] = False  # annotated but occluded: still counts
  return part, missing, visible


def write_valid_h5(path: Path, part=None, normalize=None) -> Path:
  """pose-hg-train's `annot/valid.h5`: every key of `convert_annot.py`, float64
  arrays but `imgname` (fixed-length bytes), attribute name = 'mpii'."""
  default_part, missing, visible = _mpii_parts()
  part = np.where(missing[..., None], 0.0, default_part) if part is None else part
  with h5py.File(path, "w") as f:
    f.attrs["name"] = "mpii"
    f["center"] = np.full((N_MPII, 2), 200.0)
    f["imgname"] = np.array([f"{i:09d}.jpg".encode() for i in range(N_MPII)])  # |S13
    f["index"] = np.arange(N_MPII, dtype=float) * 3
    f["normalize"] = np.full(N_MPII, 15.0) if normalize is None else normalize
    f["part"] = part
    f["person"] = np.zeros(N_MPII)
    f["scale"] = np.full(N_MPII, 2.5)
    f["torsoangle"] = np.full(N_MPII, 3.0)
    f["visible"] = visible.astype(float)
  return path


def write_gt_valid_mat(
  path: Path, order=MPII_NAMES, spell=None, with_pred: bool = False, pos=None, boxes=None
) -> Path:
  """HRNet's `gt_valid.mat` (MATLAB v5): `dataset_joints` a 1×16 cell array of
  strings, `jnt_missing` uint8 (16, N), `pos_gt_src` (16, 2, N) with missing joints
  at 0, `headboxes_src` (2, 2, N); `with_pred` adds pytorch-pose's `pos_pred_src`
  (the `detections_our_format.mat` layout). `order` permutes the joints, `spell`
  renames some (name -> name written)."""
  part, missing, _ = _mpii_parts()
  perm = [MPII_NAMES.index(n) for n in order]
  pos_nj2 = np.where(missing[..., None], 0.0, part) if pos is None else pos
  if boxes is None:
    boxes = np.tile(np.array(HEAD_BOX).reshape(2, 2, 1), (1, 1, N_MPII))
  data = {
    # A numpy object array of str is what savemat writes as a MATLAB cell array.
    "dataset_joints": np.array([(spell or {}).get(n, n) for n in order], object).reshape(1, 16),
    "jnt_missing": missing[:, perm].T.astype(np.uint8),
    "pos_gt_src": pos_nj2[:, perm].transpose(1, 2, 0),
    "headboxes_src": boxes,
  }
  if with_pred:
    data["pos_pred_src"] = np.zeros((16, 2, N_MPII))
  scipy.io.savemat(path, data)
  return path


def write_mpii_gt(tmp_path: Path, kind: str, **kwargs) -> Path:
  if kind == "valid.h5":
    return write_valid_h5(tmp_path / kind, **kwargs)
  return write_gt_valid_mat(tmp_path / f"{kind}.mat", with_pred=kind == "detections", **kwargs)


MPII_GT_KINDS = ["valid.h5", "gt_valid", "detections"]


def mpii_predictions(kind: str) -> np.ndarray:
  """(N, 16, 2) 1-based predictions for the fake MPII ground truth."""
  part, _, _ = _mpii_parts()
  if kind == "perfect":
    return part.copy()
  pred = part.copy()
  pred[:2] += (4.5, 6.0)  # distance 7.5 = 0.5 · head size: correct (≤)
  pred[2:] += (30.0, 40.0)  # distance 50: wrong
  return pred


# --- fake FLIC examples.mat -------------------------------------------------------------

FLIC_FIELDS = (
  "poselet_hit_idx", "moviename", "coords", "filepath", "imgdims", "currframe",
  "torsobox", "istrain", "istest",
)  # fmt: skip
# examples.mat's 0-based `coords` column of each annotated joint.
COORD_COLUMN = dict(zip(FLIC.annotated, joints.FLIC_COORD_COLUMNS, strict=True))


def _person(kind: str, shift=(0.0, 0.0)) -> np.ndarray:
  """(11, 2) annotated joints (1-based pixels) of one of three people.

  "front": faces the camera (its left arm on the image's right).
  "back": faces away: all three left arm joints left of the right ones.
  "crossed": shoulders crossed, elbows and wrists not (MODEC does not flip it).
  Torsos: hourglass ‖rsho − lhip‖ = 100 for all; modec ‖lsho − rhip‖ after the
  flip = 130, 80, 40; observer-centric = 100, ‖(100, 80)‖, 40.
  """
  # Columns: lsho, lelb, lwri, rsho, relb, rwri, lhip, rhip, leye, reye, nose.
  people = {
    "front": ((220, 100), (240, 160), (250, 220), (100, 100), (80, 160), (70, 220),
              (160, 180), (170, 220), (150, 60), (170, 60), (160, 70)),
    "back": ((100, 100), (90, 160), (80, 220), (200, 100), (210, 160), (220, 220),
             (140, 180), (200, 180), (140, 60), (160, 60), (150, 70)),
    "crossed": ((150, 150), (260, 200), (270, 250), (170, 100), (120, 200), (110, 250),
                (230, 180), (174, 182), (150, 60), (170, 60), (160, 70)),
  }  # fmt: skip
  return np.array(people[kind], float) + shift


# File rows: 0 and 3 are training rows; the test rows in file order are 1, 2, 4, 5.
FLIC_ROWS = [
  ("train", _person("back", (5, 5))),
  ("test", _person("front")),
  ("test", _person("front", (300, 50))),
  ("train", _person("front", (3, 3))),
  ("test", _person("back")),
  ("test", _person("crossed")),
]
FLIC_TEST_ROWS = (1, 2, 4, 5)


def flic_test_joints() -> np.ndarray:
  """(4, 11, 2) examples.mat's labels of the test rows (1-based, as stored)."""
  return np.stack([p for split, p in FLIC_ROWS if split == "test"])


def write_examples_mat(path: Path, rows=FLIC_ROWS) -> Path:
  """examples.mat as distributed: a 1×N struct array with FLIC's fields and the
  real file's types (see `test_fake_examples_mat_has_the_real_layout`)."""
  arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in FLIC_FIELDS])
  for i, (split, pts) in enumerate(rows):
    coords = np.full((2, 29), np.nan)
    coords[:, list(joints.FLIC_COORD_COLUMNS)] = pts.T
    e = arr[0, i]
    e["poselet_hit_idx"] = np.array([[48], [148], [19]], np.uint16)
    e["moviename"] = "fake-movie"
    e["coords"] = coords
    e["filepath"] = f"fake-movie-{i:08d}.jpg"
    e["imgdims"] = np.array([[480, 720, 3]], np.uint16)
    e["currframe"] = np.array([[i]], np.uint16)
    e["torsobox"] = np.array([[90.0, 90.0, 210.0, 200.0]], np.float32)
    e["istrain"] = np.array([[split == "train"]], np.uint8)
    e["istest"] = np.array([[split == "test"]], np.uint8)
  scipy.io.savemat(path, {"examples": arr})
  return path


# --- prediction files in every layout ------------------------------------------------

LAYOUTS = {
  "NJ2": lambda p: p,
  "J2N": lambda p: p.transpose(1, 2, 0),
  "2JN": lambda p: p.transpose(2, 1, 0),
}


def write_v73_mat(path: Path, key: str, matlab_array: np.ndarray) -> Path:
  """A MATLAB v7.3 (HDF5) file: column-major, so the stored axes are reversed."""
  with h5py.File(path, "w", userblock_size=512) as f:
    f[key] = np.asarray(matlab_array).T
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
  with open(path, "r+b") as f:
    f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
  return path


def write_preds(path: Path, preds: np.ndarray, layout: str = "NJ2", key: str = "preds") -> str:
  arr = LAYOUTS[layout](preds)
  if path.suffix == ".mat":
    scipy.io.savemat(path, {key: arr})
  else:
    with h5py.File(path, "w") as f:
      f[key] = arr
  return str(path)


# --- running the launcher ----------------------------------------------------------------


def run_main(*args: str) -> None:
  """Parses flags as the command line would and calls `main` in this process."""
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["evaluate_predictions", *args])
    evaluate_predictions.main(argv)


def run_json(tmp_path: Path, *args: str) -> dict:
  out = tmp_path / "scores.json"
  run_main(*args, f"--output_json={out}")
  return json.loads(out.read_text())


def run_tables(tmp_path: Path, *args: str) -> dict:
  return run_json(tmp_path, *args)["tables"]


def expect_error(*args: str) -> str:
  with pytest.raises(SystemExit) as e:
    run_main(*args)
  msg = e.value.code
  assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg
  return msg


# --- MPII -----------------------------------------------------------------------------


@pytest.mark.parametrize("gt_kind", MPII_GT_KINDS)
@pytest.mark.parametrize("suffix", [".mat", ".h5"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_mpii_layouts_perfect_predictions(tmp_path, capsys, gt_kind, suffix, layout):
  gt = write_mpii_gt(tmp_path, gt_kind)
  preds = write_preds(tmp_path / f"preds{suffix}", mpii_predictions("perfect"), layout)
  out = run_json(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  assert out == {
    "dataset": "mpii",
    "metric": "PCKh",
    "protocol": "evaluatePCKh",
    "num_examples": N_MPII,
    "tables": {"0.5": dict.fromkeys(MPII_COLUMNS, 100.0)},
  }
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == MPII_COLUMNS
  assert lines[1].startswith("PCKh@0.5 (MPII) ")
  assert lines[1].split()[2:] == ["100.0"] * 9


@pytest.mark.parametrize("gt_kind", MPII_GT_KINDS)
def test_mpii_known_half_with_missing_and_occluded(tmp_path, gt_kind):
  # gt_valid.mat: names in another order, thorax spelled as pose-hg-train does.
  renamed = {"order": MPII_NAMES[::-1], "spell": {"thor": "thrx"}}
  gt = write_mpii_gt(tmp_path, gt_kind, **({} if gt_kind == "valid.h5" else renamed))
  preds = write_preds(tmp_path / "preds.h5", mpii_predictions("half"))
  args = ("--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  # Examples 0, 1 correct (at exactly 0.5), 2, 3 wrong; l_ankle of example 3 is
  # missing (skipped); r_wrist of example 2 is occluded and r_knee of example 1
  # lies at x = 0: both counted, so 4 · 14 − 1 = 55 joints are scored.
  expected = {c: 50.0 for c in MPII_COLUMNS}
  expected["Ankle"] = (50.0 + 200 / 3) / 2
  expected["Total"] = 100 * 28 / 55
  assert run_tables(tmp_path, *args)["0.5"] == pytest.approx(expected)
  assert run_tables(tmp_path, *args, "--threshold=0.49") == {
    "0.49": dict.fromkeys(MPII_COLUMNS, 0.0)
  }


def test_mpii_readers_frames_and_masks(tmp_path):
  part, missing, visible = _mpii_parts()
  for kind in MPII_GT_KINDS:
    gt = prediction_io.read_mpii_ground_truth(write_mpii_gt(tmp_path, kind))
    np.testing.assert_array_equal(gt.valid, ~missing)
    np.testing.assert_array_equal(gt.joints, np.where(missing[..., None], 0.0, part - 1))
    np.testing.assert_allclose(gt.normalizer, 15.0)
  h5 = prediction_io.read_mpii_ground_truth(tmp_path / "valid.h5")
  np.testing.assert_array_equal(h5.visible, visible)
  np.testing.assert_array_equal(h5.index, [0, 3, 6, 9])


def test_fake_gt_valid_mat_has_the_real_layout(tmp_path):
  # What scipy.io.loadmat gives for the real file (pytorch-pose's
  # evaluation/data/detections_our_format.mat, 2958 people): a (1, 16) object
  # array of (1,) '<U4' arrays, uint8 jnt_missing, float64 positions and boxes.
  d = scipy.io.loadmat(write_gt_valid_mat(tmp_path / "gt.mat", with_pred=True))
  names = d["dataset_joints"]
  assert names.shape == (1, 16) and names.dtype == object
  assert [(x.dtype.str, x.shape) for x in names[0]] == [("<U4", (1,))] * 16
  assert [x[0] for x in names[0]] == list(MPII_NAMES)
  assert d["jnt_missing"].dtype == np.uint8 and d["jnt_missing"].shape == (16, N_MPII)
  for key, shape in (("pos_gt_src", (16, 2)), ("pos_pred_src", (16, 2)), ("headboxes_src", (2, 2))):
    assert d[key].dtype == np.float64 and d[key].shape == (*shape, N_MPII)
  # HRNet's own evaluate() finds its joints the same way.
  assert np.where(names == "head")[1][0] == 9


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_mpii_writer_round_trip(tmp_path, suffix):
  preds0 = np.random.default_rng(1).uniform(0, 300, (5, 16, 2))
  path = tmp_path / f"p{suffix}"
  prediction_io.write_mpii_predictions(path, preds0)
  raw = prediction_io.read_predictions(path, 16)
  np.testing.assert_allclose(raw, preds0 + 1)  # stored 1-based, (N, 16, 2)
  np.testing.assert_allclose(prediction_io.read_mpii_predictions(path, 5), preds0)


def test_mpii_matlab_v73_predictions(tmp_path):
  gt = write_valid_h5(tmp_path / "valid.h5")
  preds = write_v73_mat(tmp_path / "preds.mat", "preds", mpii_predictions("perfect"))
  tables = run_tables(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  assert tables["0.5"]["Total"] == 100.0


def test_ambiguous_layout_is_named_not_guessed(tmp_path):
  # (2, 16, 2) reads as (N, 16, 2) or as (2, 16, N), N = 2: refused unless named.
  arr = np.arange(64, dtype=float).reshape(2, 16, 2)
  path = write_preds(tmp_path / "p.h5", arr)
  with pytest.raises(ValueError, match=r"not guessed.*--predictions_layout=NJ2 or 2JN"):
    prediction_io.read_predictions(path, 16, 2)
  np.testing.assert_array_equal(prediction_io.read_predictions(path, 16, 2, "NJ2"), arr)
  np.testing.assert_array_equal(
    prediction_io.read_predictions(path, 16, 2, "2JN"), arr.transpose(2, 1, 0)
  )
  # N = 16 stays unambiguous in every layout.
  p16 = np.random.default_rng(2).normal(size=(16, 16, 2))
  for layout in LAYOUTS:
    path = write_preds(tmp_path / f"{layout}.h5", p16, layout)
    np.testing.assert_array_equal(prediction_io.read_predictions(path, 16, 16), p16)


def test_mpii_subprocess(tmp_path):
  gt = write_valid_h5(tmp_path / "valid.h5")
  preds = write_preds(tmp_path / "preds.mat", mpii_predictions("half"), "J2N")
  out = tmp_path / "s.json"
  cmd = [sys.executable, "-m", "experiments.evaluate_predictions", "--dataset=mpii"]
  args = [f"--predictions={preds}", f"--ground_truth={gt}", f"--output_json={out}"]
  r = subprocess.run(cmd + args, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines()[1].split()[:4] == ["PCKh@0.5", "(MPII)", "50.0", "50.0"]
  assert json.loads(out.read_text())["tables"]["0.5"]["Shoulder"] == 50.0

  bad = tmp_path / "bad.h5"
  bad.write_bytes(b"not an hdf5 file")
  args = [f"--predictions={bad}", f"--ground_truth={gt}"]
  r = subprocess.run(cmd + args, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines() == [r.stderr.strip()]
  assert r.stderr.startswith("error: ") and str(bad) in r.stderr


# --- errors ----------------------------------------------------------------------------


def test_errors_name_the_file(tmp_path):
  gt = str(write_valid_h5(tmp_path / "valid.h5"))
  good = mpii_predictions("perfect")
  garbage_mat = tmp_path / "garbage.mat"
  garbage_mat.write_bytes(b"\x00garbage" * 40)
  garbage_h5 = tmp_path / "garbage.h5"
  garbage_h5.write_bytes(b"garbage")
  cases = {
    "malformed .mat": str(garbage_mat),
    "malformed .h5": str(garbage_h5),
    "wrong shape": write_preds(tmp_path / "shape.mat", good[:, :15]),
    "count mismatch": write_preds(tmp_path / "count.h5", good[:3]),
    "missing key": write_preds(tmp_path / "key.mat", good, key="pred"),
    "non-numeric": write_preds(tmp_path / "str.h5", np.full((4, 16, 2), "a").astype("S1")),
    "no such file": str(tmp_path / "absent.mat"),
    "unsupported type": str(tmp_path / "preds.npy"),
  }
  for what, preds in cases.items():
    msg = expect_error("--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
    assert preds in msg, (what, msg)
  assert "expected (N, 16, 2)" in expect_error(
    "--dataset=mpii", f"--predictions={cases['wrong shape']}", f"--ground_truth={gt}"
  )
  assert "ground truth has 4" in expect_error(
    "--dataset=mpii", f"--predictions={cases['count mismatch']}", f"--ground_truth={gt}"
  )
  preds = write_preds(tmp_path / "ok.mat", good)
  # A ground-truth file without its keys, and flag errors.
  msg = expect_error("--dataset=mpii", f"--predictions={preds}", f"--ground_truth={preds}")
  assert preds in msg and "pos_gt_src" in msg
  assert "unknown --dataset" in expect_error(
    "--dataset=lsp", f"--predictions={preds}", f"--ground_truth={gt}"
  )
  assert "--ground_truth is required" in expect_error("--dataset=mpii", f"--predictions={preds}")
  for value in ("modec", "hourglass"):
    msg = expect_error(
      "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}", f"--flic_protocol={value}"
    )
    assert "--flic_protocol applies to --dataset=flic only" in msg


def test_mpii_ground_truth_errors(tmp_path):
  preds = write_preds(tmp_path / "p.h5", mpii_predictions("perfect"))
  part, missing, _ = _mpii_parts()
  part = np.where(missing[..., None], 0.0, part)

  def error(gt: Path) -> str:
    return expect_error("--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")

  # No example with a head size > 0: an error, not a table of NaN.
  bad = write_valid_h5(tmp_path / "zero_normalize.h5", normalize=np.zeros(N_MPII))
  msg = error(bad)
  assert str(bad) in msg and "'normalize'" in msg and "head size" in msg
  zero_boxes = np.zeros((2, 2, N_MPII))
  bad = write_gt_valid_mat(tmp_path / "zero_boxes.mat", boxes=zero_boxes)
  msg = error(bad)
  assert str(bad) in msg and "'headboxes_src'" in msg
  # Some rows without a head box are fine: they are skipped.
  some = np.tile(np.array(HEAD_BOX).reshape(2, 2, 1), (1, 1, N_MPII))
  some[..., 0] = 0
  ok = write_gt_valid_mat(tmp_path / "some_boxes.mat", boxes=some)
  tables = run_tables(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={ok}")
  assert tables["0.5"]["Total"] == 100.0

  # Non-finite coordinates of an annotated joint.
  nan_part = part.copy()
  nan_part[2, MPII.index("l_elbow")] = (np.nan, 7.0)
  bad = write_valid_h5(tmp_path / "nan_part.h5", part=nan_part)
  msg = error(bad)
  assert str(bad) in msg and "'part'" in msg and "example 2" in msg and "l_elbow" in msg
  inf_pos = part.copy()
  inf_pos[0, MPII.index("head_top")] = (np.inf, 3.0)
  bad = write_gt_valid_mat(tmp_path / "inf_pos.mat", pos=inf_pos)
  msg = error(bad)
  assert str(bad) in msg and "'pos_gt_src'" in msg and "head_top" in msg
  # ... but a missing joint may hold anything.
  nan_missing = part.copy()
  nan_missing[3, MPII.index("l_ankle")] = np.nan
  ok = write_gt_valid_mat(tmp_path / "nan_missing.mat", pos=nan_missing)
  tables = run_tables(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={ok}")
  assert tables["0.5"]["Total"] == 100.0

  bad = write_gt_valid_mat(tmp_path / "names.mat", spell={"thor": "chest"})
  assert "are not MPII's 16 joints" in error(bad)


def test_flic_errors(tmp_path):
  ex = write_examples_mat(tmp_path / "examples.mat")
  not_examples = write_preds(tmp_path / "other.mat", flic_test_joints())
  msg = expect_error(
    "--dataset=flic", f"--predictions={not_examples}", f"--ground_truth={not_examples}"
  )
  assert not_examples in msg and "'examples'" in msg
  mpii_shaped = write_preds(tmp_path / "p.h5", np.zeros((4, 16, 2)))
  msg = expect_error("--dataset=flic", f"--predictions={mpii_shaped}", f"--ground_truth={ex}")
  assert mpii_shaped in msg and "(N, 11, 2)" in msg
  five = write_preds(tmp_path / "five.h5", np.zeros((5, 11, 2)))
  msg = expect_error("--dataset=flic", f"--predictions={five}", f"--ground_truth={ex}")
  assert five in msg and "5 predictions" in msg
  preds = write_preds(tmp_path / "ok.h5", flic_test_joints())
  msg = expect_error(
    "--dataset=flic", f"--predictions={preds}", f"--ground_truth={ex}", "--flic_protocol=pc"
  )
  assert "unknown --flic_protocol 'pc'" in msg and "observer_centric" in msg


def test_flic_ground_truth_errors(tmp_path):
  preds = write_preds(tmp_path / "p.h5", flic_test_joints())

  def rows_with(fn):
    return [(split, fn(p.copy())) for split, p in FLIC_ROWS]

  def error(gt: Path, protocol: str = "modec") -> str:
    args = (f"--predictions={preds}", f"--ground_truth={gt}", f"--flic_protocol={protocol}")
    return expect_error("--dataset=flic", *args)

  def drop(name):
    def fn(p):
      p[FLIC.annotated.index(name)] = np.nan
      return p

    return fn

  # Without r_hip no example has a modec torso ‖l_shoulder − r_hip‖; hourglass still has one.
  no_rhip = write_examples_mat(tmp_path / "no_rhip.mat", rows_with(drop("r_hip")))
  msg = error(no_rhip)
  assert str(no_rhip) in msg and "'coords'" in msg and "modec torso" in msg
  tables = run_tables(
    tmp_path,
    "--dataset=flic",
    f"--predictions={preds}",
    f"--ground_truth={no_rhip}",
    "--flic_protocol=hourglass",
  )
  assert tables["0.2"] == dict.fromkeys(FLIC_COLUMNS, 100.0)
  no_lhip = write_examples_mat(tmp_path / "no_lhip.mat", rows_with(drop("l_hip")))
  assert "hourglass torso" in error(no_lhip, "hourglass")

  def half_nan(p):
    p[FLIC.annotated.index("l_wrist"), 0] = np.nan  # x NaN, y given: not a missing joint
    return p

  bad = write_examples_mat(tmp_path / "half_nan.mat", rows_with(half_nan))
  msg = error(bad)
  assert str(bad) in msg and "'coords'" in msg and "non-finite" in msg
  assert "example 1 (0-based), l_wrist" in msg  # the examples.mat row

  def inf(p):
    p[FLIC.annotated.index("nose")] = np.inf
    return p

  bad = write_examples_mat(tmp_path / "inf.mat", rows_with(inf))
  assert "non-finite" in error(bad, "hourglass")
  no_test = write_examples_mat(tmp_path / "no_test.mat", [("train", p) for _, p in FLIC_ROWS])
  msg = error(no_test)
  assert str(no_test) in msg and "'istest'" in msg


# --- FLIC --------------------------------------------------------------------------------


def test_flic_ground_truth_reader_per_protocol(tmp_path):
  path = write_examples_mat(tmp_path / "examples.mat")
  raw = flic_test_joints() - 1  # design frame
  gt = {p: prediction_io.read_flic_ground_truth(path, "test", p) for p in flic_labels.PROTOCOLS}
  for p, g in gt.items():
    np.testing.assert_array_equal(g.index, FLIC_TEST_ROWS)
    assert g.protocol == p and g.valid.all()
    labels = flic_labels.protocol_labels(raw, None, p)
    np.testing.assert_array_equal(g.joints, labels.joints)
    np.testing.assert_allclose(g.normalizer, labels.torso)
  np.testing.assert_array_equal(gt["hourglass"].joints, raw)
  np.testing.assert_allclose(gt["hourglass"].normalizer, 100.0)
  np.testing.assert_allclose(gt["modec"].normalizer, [130, 130, 80, 40])
  np.testing.assert_array_equal(gt["modec"].relabelled, [0, 0, 1, 0])
  np.testing.assert_allclose(gt["observer_centric"].normalizer, [100, 100, np.hypot(100, 80), 40])
  np.testing.assert_array_equal(gt["observer_centric"].relabelled, [0, 0, 1, 1])
  # The default is modec; the train split is flipped the same way (row 0 faces away).
  default = prediction_io.read_flic_ground_truth(path)
  np.testing.assert_array_equal(default.joints, gt["modec"].joints)
  train = prediction_io.read_flic_ground_truth(path, "train")
  np.testing.assert_array_equal(train.index, [0, 3])
  np.testing.assert_array_equal(train.relabelled, [True, False])


def _modec_eval_dataset(coords: np.ndarray, pred_coords: np.ndarray, alpha: float) -> dict:
  """MODEC's eval_dataset.m, step by step, on (N, 2, 29) examples.mat coords.

  flip_backwards_facing_groundtruth.m: backwards = all(C(1, [lsho lelb lwri]) <
  C(1, [rsho relb rwri])); on those, coords(:, [left right]) = coords(:, [right
  left]). score_predictions.m: errs = ‖gt − pred‖ · 100 / ‖gt(lsho) − gt(rhip)‖;
  accuracyCurve.m: 100 · mean(errs ≤ range(k)) over both sides of a part.
  """
  lsho, lelb, lwri, rsho, relb, rwri, rhip, nose = 0, 1, 2, 3, 4, 5, 9, 16  # lookupPart − 1
  gt = coords.copy()
  left, right = [lsho, lelb, lwri], [rsho, relb, rwri]
  backwards = np.all(gt[:, 0, left] < gt[:, 0, right], axis=1)
  gt[np.ix_(backwards, [0, 1], left + right)] = gt[np.ix_(backwards, [0, 1], right + left)]
  scaling = np.linalg.norm(gt[:, :, lsho] - gt[:, :, rhip], axis=1)
  parts = {
    "Head": [nose],
    "Shoulder": [lsho, rsho],
    "Elbow": [lelb, relb],
    "Wrist": [lwri, rwri],
  }
  out = {}
  for column, idx in parts.items():
    errs = np.linalg.norm(gt[:, :, idx] - pred_coords[:, :, idx], axis=1) * 100 / scaling[:, None]
    out[column] = 100 * np.mean(errs <= 100 * alpha)
  return out


def test_flic_modec_protocol_reproduces_eval_dataset_m(tmp_path, capsys):
  ex = write_examples_mat(tmp_path / "examples.mat")
  raw = flic_test_joints()
  pred = raw + (6.0, 8.0)  # 10 px off examples.mat's labels ...
  pred[1] = raw[1]  # ... but the second person is perfect
  preds = write_preds(tmp_path / "p.h5", pred)
  args = ("--dataset=flic", f"--predictions={preds}", f"--ground_truth={ex}")
  out = {p: run_json(tmp_path, *args, f"--flic_protocol={p}") for p in flic_labels.PROTOCOLS}
  assert run_json(tmp_path, *args) == out["modec"]  # the default
  assert {p: o["protocol"] for p, o in out.items()} == {p: p for p in flic_labels.PROTOCOLS}

  # MODEC's own script on the same files (coords as stored, 29 columns).
  file_data = scipy.io.loadmat(ex)["examples"][0]
  coords = np.stack([e["coords"] for e in file_data[list(FLIC_TEST_ROWS)]])
  pred29 = np.full_like(coords, np.nan)
  pred29[:, :, list(joints.FLIC_COORD_COLUMNS)] = pred.transpose(0, 2, 1)
  for alpha in (0.05, 0.2):
    expected = _modec_eval_dataset(coords, pred29, alpha)
    assert out["modec"]["tables"][f"{alpha:g}"] == pytest.approx(expected)

  # By hand. modec torsos (after the flip) 130, 130, 80, 40: at 0.2 the backward
  # person (row 3) keeps only the nose (10 / 80; its arms meet the flipped labels,
  # ≈ 95 px off) and the crossed one (10 / 40) nothing. hourglass torsos are all
  # 100: every 10 px error passes 0.2. observer-centric: 100, 100, 128, 40.
  assert out["modec"]["tables"] == {
    "0.05": dict.fromkeys(FLIC_COLUMNS, 25.0),
    "0.2": {"Head": 75.0, "Shoulder": 50.0, "Elbow": 50.0, "Wrist": 50.0},
  }
  assert out["hourglass"]["tables"] == {
    "0.05": dict.fromkeys(FLIC_COLUMNS, 25.0),
    "0.2": dict.fromkeys(FLIC_COLUMNS, 100.0),
  }
  assert out["observer_centric"]["tables"] == {
    "0.05": dict.fromkeys(FLIC_COLUMNS, 25.0),
    "0.2": dict.fromkeys(FLIC_COLUMNS, 75.0),
  }
  # The launcher scores what metrics.flic_pck_tables scores on examples.mat's labels.
  for p in flic_labels.PROTOCOLS:
    tables = metrics.flic_pck_tables(pred, raw, np.ones((4, 11), bool), (0.05, 0.2), p)
    assert out[p]["tables"] == {f"{t:g}": cols for t, cols in tables.items()}

  # Every printed row names metric, threshold, dataset and protocol.
  capsys.readouterr()
  run_main(*args, "--flic_protocol=hourglass")
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == FLIC_COLUMNS
  assert lines[1].startswith("PCK@0.05 (FLIC, hourglass protocol) ")
  assert lines[2].startswith("PCK@0.2 (FLIC, hourglass protocol) ")
  assert lines[2].split()[-4:] == ["100.0"] * 4


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_flic_layouts_perfect_predictions(tmp_path, suffix, layout):
  ex = write_examples_mat(tmp_path / "examples.mat")
  # Perfect = the modec protocol's labels (arms of the backward person flipped), 1-based.
  perfect = prediction_io.read_flic_ground_truth(ex).joints + 1
  preds = write_preds(tmp_path / f"perfect{suffix}", perfect, layout)
  args = ("--dataset=flic", f"--predictions={preds}", f"--ground_truth={ex}")
  assert run_json(tmp_path, *args) == {
    "dataset": "flic",
    "metric": "PCK",
    "protocol": "modec",
    "num_examples": 4,
    "tables": {
      "0.05": dict.fromkeys(FLIC_COLUMNS, 100.0),
      "0.2": dict.fromkeys(FLIC_COLUMNS, 100.0),
    },
  }
  assert run_tables(tmp_path, *args, "--threshold=0.01") == {
    "0.01": dict.fromkeys(FLIC_COLUMNS, 100.0)
  }


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_flic_writer_round_trip(tmp_path, suffix):
  preds0 = flic_test_joints() - 1
  path = tmp_path / f"p{suffix}"
  prediction_io.write_flic_predictions(path, preds0)
  np.testing.assert_allclose(prediction_io.read_predictions(path, 11), flic_test_joints())
  np.testing.assert_allclose(prediction_io.read_flic_predictions(path, 4), preds0)


# --- the real examples.mat (skipped without /work/shared) -------------------------------

real_flic = pytest.mark.skipif(not EXAMPLES_MAT.exists(), reason="no ../shared FLIC examples.mat")


def _layout(path: Path) -> tuple:
  """Field names, and per field the dtype kind and shape pattern of the first example."""
  ex = scipy.io.loadmat(path)["examples"]
  first = ex[0, 0]

  def pattern(v):
    # poselet_hit_idx is a column of varying length; strings vary in length.
    shape = (-1, v.shape[1]) if v.ndim == 2 and v.shape[0] > 1 else v.shape
    return v.dtype.kind if v.dtype.kind in "Uf" else "int", shape

  return ex.shape[0], ex.dtype.names, {f: pattern(first[f]) for f in ex.dtype.names}


@real_flic
def test_fake_examples_mat_has_the_real_layout(tmp_path):
  real = _layout(EXAMPLES_MAT)
  fake = _layout(write_examples_mat(tmp_path / "examples.mat"))
  assert fake == real
  ex = scipy.io.loadmat(EXAMPLES_MAT)["examples"][0]
  assert {e["imgdims"].tolist()[0] == [480, 720, 3] for e in ex} == {True}
  assert ex[0]["torsobox"].dtype == np.float32 and ex[0]["istest"].dtype == np.uint8


@real_flic
def test_real_flic_ground_truth_as_predictions(tmp_path):
  raw = prediction_io.read_flic_ground_truth(EXAMPLES_MAT, "test", "hourglass")
  assert len(raw) == 1016 and raw.valid.all()
  for protocol, flipped in (("modec", 48), ("hourglass", 0), ("observer_centric", 48)):
    gt = prediction_io.read_flic_ground_truth(EXAMPLES_MAT, "test", protocol)
    assert gt.relabelled.sum() == flipped
    preds = tmp_path / f"{protocol}.h5"
    # Perfect predictions: the protocol's labels; under observer_centric the
    # launcher relabels person-centric predictions itself.
    prediction_io.write_flic_predictions(
      preds, raw.joints if protocol == "observer_centric" else gt.joints
    )
    out = run_json(
      tmp_path,
      "--dataset=flic",
      f"--predictions={preds}",
      f"--ground_truth={EXAMPLES_MAT}",
      f"--flic_protocol={protocol}",
    )
    assert out["num_examples"] == 1016 and out["protocol"] == protocol
    assert out["tables"] == {
      "0.05": dict.fromkeys(FLIC_COLUMNS, 100.0),
      "0.2": dict.fromkeys(FLIC_COLUMNS, 100.0),
    }
  # On FLIC's test set MODEC flips exactly the people the observer-centric rule swaps.
  modec = prediction_io.read_flic_ground_truth(EXAMPLES_MAT, "test", "modec")
  oc = prediction_io.read_flic_ground_truth(EXAMPLES_MAT, "test", "observer_centric")
  np.testing.assert_array_equal(modec.relabelled, oc.relabelled)
  # examples.mat's raw labels as predictions lose the flipped arms under modec.
  t = metrics.flic_pck_tables(raw.joints, raw.joints, raw.valid, [0.2], "modec")[0.2]
  assert t["Head"] == 100.0 and t["Wrist"] < 100.0
