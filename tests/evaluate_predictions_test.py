"""File formats and the evaluate_predictions launcher, on small files in the official layouts."""

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
from heatpose_jax import joints, prediction_io

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EXAMPLES_MAT = SHARED / "data" / "flic" / "examples.mat"
MPII = joints.SKELETONS["mpii"]
FLIC = joints.SKELETONS["flic"]
MPII_COLUMNS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "UBody", "Total"]
FLIC_COLUMNS = ["Head", "Shoulder", "Elbow", "Wrist"]
HRNET_NAMES = (
  "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thrx",
  "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip

# --- fake ground truth in the official layouts (1-based MATLAB pixels) -------------

N_MPII = 4
HEAD_BOX = (5.0, 5.0, 20.0, 25.0)  # 0.6 · diagonal 25 = head size 15


def _mpii_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, 16, 2) 1-based integer parts, (N, 16) missing, (N, 16) visible."""
  rng = np.random.default_rng(0)
  part = rng.integers(50, 400, (N_MPII, 16, 2)).astype(float)
  missing = np.zeros((N_MPII, 16), bool)
  missing[3, MPII.index("l_ankle")] = True
  visible = ~missing
  visible[2, MPII.index("r_wrist")] = False  # annotated but occluded: still counts
  return part, missing, visible


def write_valid_h5(path: Path) -> Path:
  part, missing, visible = _mpii_parts()
  with h5py.File(path, "w") as f:
    f["part"] = np.where(missing[..., None], 0.0, part)
    f["visible"] = visible.astype(float)
    f["normalize"] = np.full(N_MPII, 15.0)
    f["index"] = np.arange(N_MPII, dtype=float)
    f["person"] = np.zeros(N_MPII)
  return path


def write_gt_valid_mat(path: Path, order=HRNET_NAMES) -> Path:
  part, missing, _ = _mpii_parts()
  perm = [HRNET_NAMES.index(n) for n in order]
  names = np.empty((1, 16), dtype=object)
  for k, n in enumerate(order):
    names[0, k] = np.array([n])
  boxes = np.tile(np.array(HEAD_BOX).reshape(2, 2, 1), (1, 1, N_MPII))
  scipy.io.savemat(
    path,
    {
      "pos_gt_src": np.where(missing[..., None], 0.0, part)[:, perm].transpose(1, 2, 0),
      "jnt_missing": missing[:, perm].T.astype(float),
      "headboxes_src": boxes,
      "dataset_joints": names,
    },
  )
  return path


def mpii_predictions(kind: str) -> np.ndarray:
  """(N, 16, 2) 1-based predictions for the fake MPII ground truth."""
  part, _, _ = _mpii_parts()
  if kind == "perfect":
    return part.copy()
  pred = part.copy()
  pred[:2] += (4.5, 6.0)  # distance 7.5 = 0.5 · head size: correct (≤)
  pred[2:] += (30.0, 40.0)  # distance 50: wrong
  return pred


N_FLIC_ROWS = 6
FLIC_TEST_ROWS = (1, 2, 4, 5)
FLIC_FIELDS = (
  "poselet_hit_idx", "moviename", "coords", "filepath", "imgdims", "currframe",
  "torsobox", "istrain", "istest",
)  # fmt: skip


def _flic_person(facing_camera: bool, shift: float) -> np.ndarray:
  """(11, 2) annotated 1-based joints: ‖r_sho − l_hip‖ = 100, ‖l_sho − r_hip‖ = 50."""
  a = FLIC.annotated.index
  p = np.tile(np.array([[150.0, 150.0]]), (11, 1)) + np.arange(11)[:, None]
  p[a("r_shoulder")] = (100, 100)
  p[a("l_hip")] = (160, 180)
  p[a("l_shoulder")] = (200, 100) if facing_camera else (50, 100)
  p[a("r_hip")] = (120, 180) if facing_camera else (80, 140)
  return p + shift


def flic_test_joints() -> np.ndarray:
  """(4, 11, 2) the fake test rows; the last person faces away."""
  return np.stack([_flic_person(i != 3, 10.0 * i) for i in range(len(FLIC_TEST_ROWS))])


def write_examples_mat(path: Path) -> Path:
  """A 1×N struct array with examples.mat's field names, as MATLAB saves it."""
  arr = np.zeros((1, N_FLIC_ROWS), dtype=[(f, object) for f in FLIC_FIELDS])
  test = flic_test_joints()
  for i in range(N_FLIC_ROWS):
    coords = np.full((2, 29), np.nan)
    pts = test[FLIC_TEST_ROWS.index(i)] if i in FLIC_TEST_ROWS else _flic_person(True, 0.0) + 3
    coords[:, list(joints.FLIC_COORD_COLUMNS)] = pts.T
    e = arr[0, i]
    e["poselet_hit_idx"] = np.array([[1, 2]], np.uint16)
    e["moviename"] = "fake-movie"
    e["coords"] = coords
    e["filepath"] = f"fake-movie-{i:08d}.jpg"
    e["imgdims"] = np.array([[480, 720, 3]], np.uint16)
    e["currframe"] = float(i)
    e["torsobox"] = np.array([[90.0, 90.0, 210.0, 200.0]], np.float32)
    e["istrain"] = np.uint8(i not in FLIC_TEST_ROWS)
    e["istest"] = np.uint8(i in FLIC_TEST_ROWS)
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


def expect_error(capsys, *args: str) -> str:
  with pytest.raises(SystemExit) as e:
    run_main(*args)
  msg = e.value.code
  assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg
  return msg


# --- MPII -----------------------------------------------------------------------------


@pytest.mark.parametrize("gt_kind", ["valid.h5", "gt_valid.mat"])
@pytest.mark.parametrize("suffix", [".mat", ".h5"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_mpii_layouts_perfect_predictions(tmp_path, capsys, gt_kind, suffix, layout):
  gt = (
    write_valid_h5(tmp_path / gt_kind)
    if gt_kind == "valid.h5"
    else write_gt_valid_mat(tmp_path / gt_kind)
  )
  preds = write_preds(tmp_path / f"preds{suffix}", mpii_predictions("perfect"), layout)
  scores = run_json(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  assert scores == {c: 100.0 for c in MPII_COLUMNS}
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == MPII_COLUMNS
  assert lines[1].split() == ["PCKh@0.5"] + ["100.0"] * 9


@pytest.mark.parametrize("gt_kind", ["valid.h5", "gt_valid.mat"])
def test_mpii_known_half_with_missing_and_occluded(tmp_path, gt_kind):
  gt = (
    write_valid_h5(tmp_path / gt_kind)
    if gt_kind == "valid.h5"
    else write_gt_valid_mat(tmp_path / gt_kind, order=HRNET_NAMES[::-1])  # permuted names
  )
  preds = write_preds(tmp_path / "preds.h5", mpii_predictions("half"))
  scores = run_json(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  # Examples 0, 1 correct (at exactly 0.5), 2, 3 wrong; l_ankle of example 3 is
  # missing (skipped); r_wrist of example 2 is occluded (counted).
  expected = {c: 50.0 for c in MPII_COLUMNS}
  expected["Ankle"] = (50.0 + 200 / 3) / 2
  expected["Total"] = 100 * 28 / 55
  assert scores == pytest.approx(expected)
  low = run_json(
    tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}", "--threshold=0.49"
  )
  assert low == {c: 0.0 for c in MPII_COLUMNS}


def test_mpii_readers_frames_and_masks(tmp_path):
  part, missing, visible = _mpii_parts()
  for path in (write_valid_h5(tmp_path / "valid.h5"), write_gt_valid_mat(tmp_path / "gt.mat")):
    gt = prediction_io.read_mpii_ground_truth(path)
    np.testing.assert_array_equal(gt.valid, ~missing)
    np.testing.assert_array_equal(gt.joints, np.where(missing[..., None], 0.0, part - 1))
    np.testing.assert_allclose(gt.normalizer, 15.0)
  np.testing.assert_array_equal(
    prediction_io.read_mpii_ground_truth(tmp_path / "valid.h5").visible, visible
  )


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_mpii_writer_round_trip(tmp_path, suffix):
  preds0 = np.random.default_rng(1).uniform(0, 300, (5, 16, 2))
  path = tmp_path / f"p{suffix}"
  prediction_io.write_mpii_predictions(path, preds0)
  raw = prediction_io.read_predictions(path, 16)
  np.testing.assert_allclose(raw, preds0 + 1)  # stored 1-based, (N, 16, 2)
  np.testing.assert_allclose(prediction_io.read_mpii_predictions(path, 5), preds0)


def test_mpii_matlab_v73_predictions(tmp_path, capsys):
  gt = write_valid_h5(tmp_path / "valid.h5")
  preds = write_v73_mat(tmp_path / "preds.mat", "preds", mpii_predictions("perfect"))
  scores = run_json(tmp_path, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
  assert scores["Total"] == 100.0


def test_ambiguous_layout_prefers_n_j_2(tmp_path):
  # (2, 16, 2) reads as (N, 16, 2) with N = 2, not as (2, 16, N).
  arr = np.arange(64, dtype=float).reshape(2, 16, 2)
  path = write_preds(tmp_path / "p.h5", arr)
  np.testing.assert_array_equal(prediction_io.read_predictions(path, 16, 2), arr)
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
  assert r.stdout.splitlines()[1].split()[:2] == ["PCKh@0.5", "50.0"]
  assert json.loads(out.read_text())["Shoulder"] == 50.0

  bad = tmp_path / "bad.h5"
  bad.write_bytes(b"not an hdf5 file")
  args = [f"--predictions={bad}", f"--ground_truth={gt}"]
  r = subprocess.run(cmd + args, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines() == [r.stderr.strip()]
  assert r.stderr.startswith("error: ") and str(bad) in r.stderr


# --- errors ----------------------------------------------------------------------------


def test_errors_name_the_file(tmp_path, capsys):
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
    msg = expect_error(capsys, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}")
    assert preds in msg, (what, msg)
  assert "expected (N, 16, 2)" in expect_error(
    capsys, "--dataset=mpii", f"--predictions={cases['wrong shape']}", f"--ground_truth={gt}"
  )
  assert "ground truth has 4" in expect_error(
    capsys, "--dataset=mpii", f"--predictions={cases['count mismatch']}", f"--ground_truth={gt}"
  )
  preds = write_preds(tmp_path / "ok.mat", good)
  # A ground-truth file without its keys, and flag errors.
  msg = expect_error(capsys, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={preds}")
  assert preds in msg and "pos_gt_src" in msg
  assert "unknown --dataset" in expect_error(
    capsys, "--dataset=lsp", f"--predictions={preds}", f"--ground_truth={gt}"
  )
  assert "--ground_truth is required" in expect_error(
    capsys, "--dataset=mpii", f"--predictions={preds}"
  )
  assert "flic only" in expect_error(
    capsys, "--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}", "--observer_centric"
  )


def test_flic_errors(tmp_path, capsys):
  ex = write_examples_mat(tmp_path / "examples.mat")
  not_examples = write_preds(tmp_path / "other.mat", flic_test_joints())
  msg = expect_error(
    capsys, "--dataset=flic", f"--predictions={not_examples}", f"--ground_truth={not_examples}"
  )
  assert not_examples in msg and "'examples'" in msg
  mpii_shaped = write_preds(tmp_path / "p.h5", np.zeros((4, 16, 2)))
  msg = expect_error(
    capsys, "--dataset=flic", f"--predictions={mpii_shaped}", f"--ground_truth={ex}"
  )
  assert mpii_shaped in msg and "(N, 11, 2)" in msg
  five = write_preds(tmp_path / "five.h5", np.zeros((5, 11, 2)))
  msg = expect_error(capsys, "--dataset=flic", f"--predictions={five}", f"--ground_truth={ex}")
  assert five in msg and "5 predictions" in msg


# --- FLIC --------------------------------------------------------------------------------


def test_flic_ground_truth_reader(tmp_path):
  gt = prediction_io.read_flic_ground_truth(write_examples_mat(tmp_path / "examples.mat"))
  np.testing.assert_array_equal(gt.index, FLIC_TEST_ROWS)
  np.testing.assert_array_equal(gt.joints, flic_test_joints() - 1)
  assert gt.valid.all()
  np.testing.assert_allclose(gt.normalizer, 100.0)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_flic_layouts_perfect_and_half(tmp_path, capsys, suffix, layout):
  ex = write_examples_mat(tmp_path / "examples.mat")
  perfect = write_preds(tmp_path / f"perfect{suffix}", flic_test_joints(), layout)
  scores = run_json(tmp_path, "--dataset=flic", f"--predictions={perfect}", f"--ground_truth={ex}")
  assert scores == {
    "0.05": dict.fromkeys(FLIC_COLUMNS, 100.0),
    "0.2": dict.fromkeys(FLIC_COLUMNS, 100.0),
  }
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == FLIC_COLUMNS
  assert [line.split()[0] for line in lines[1:]] == ["PCK@0.05", "PCK@0.2"]

  pred = flic_test_joints()
  pred[:2] += (3.0, 4.0)  # 5 px = 0.05 · torso 100: correct at both α
  pred[2:] += (30.0, 40.0)  # 50 px: wrong at both
  half = write_preds(tmp_path / f"half{suffix}", pred, layout)
  scores = run_json(tmp_path, "--dataset=flic", f"--predictions={half}", f"--ground_truth={ex}")
  assert scores == {
    "0.05": dict.fromkeys(FLIC_COLUMNS, 50.0),
    "0.2": dict.fromkeys(FLIC_COLUMNS, 50.0),
  }
  one = run_json(
    tmp_path, "--dataset=flic", f"--predictions={half}", f"--ground_truth={ex}", "--threshold=0.6"
  )
  assert one == dict.fromkeys(FLIC_COLUMNS, 100.0)


def test_flic_observer_centric(tmp_path):
  ex = write_examples_mat(tmp_path / "examples.mat")
  preds = write_preds(tmp_path / "p.mat", flic_test_joints() + (3.0, 4.0))
  args = ("--dataset=flic", f"--predictions={preds}", f"--ground_truth={ex}", "--threshold=0.05")
  assert run_json(tmp_path, *args) == dict.fromkeys(FLIC_COLUMNS, 100.0)
  # The person facing away has an observer-centric torso of 50: 5 px = 0.1 · 50.
  oc = run_json(tmp_path, *args, "--observer_centric")
  assert oc == dict.fromkeys(FLIC_COLUMNS, 75.0)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_flic_writer_round_trip(tmp_path, suffix):
  preds0 = flic_test_joints() - 1
  path = tmp_path / f"p{suffix}"
  prediction_io.write_flic_predictions(path, preds0)
  np.testing.assert_allclose(prediction_io.read_predictions(path, 11), flic_test_joints())
  np.testing.assert_allclose(prediction_io.read_flic_predictions(path, 4), preds0)


@pytest.mark.skipif(not EXAMPLES_MAT.exists(), reason="no /work/shared FLIC examples.mat")
def test_real_flic_ground_truth_as_predictions(tmp_path, capsys):
  gt = prediction_io.read_flic_ground_truth(EXAMPLES_MAT)
  assert len(gt) == 1016 and gt.valid.all()
  preds = tmp_path / "gt_as_preds.h5"
  prediction_io.write_flic_predictions(preds, gt.joints)
  for extra in ((), ("--observer_centric",)):
    scores = run_json(
      tmp_path, "--dataset=flic", f"--predictions={preds}", f"--ground_truth={EXAMPLES_MAT}", *extra
    )
    assert scores == {
      "0.05": dict.fromkeys(FLIC_COLUMNS, 100.0),
      "0.2": dict.fromkeys(FLIC_COLUMNS, 100.0),
    }
  # 48 test people face away (the rows the hourglass observer-centric labels swap).
  from heatpose_jax import metrics

  assert metrics.faces_away(gt.joints, gt.valid, FLIC).sum() == 48
