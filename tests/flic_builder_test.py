"""FLIC builder: the parser on the real examples.mat, the builder on fake images."""

import logging
from pathlib import Path

import fake_datasets as fake
import numpy as np
import pytest

from data_prep import flic
from heatpose_jax.data import joints as joints_lib

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_FLIC = DATA / "flic" / "examples.mat"


def test_read_examples_real_file_counts_and_values():
  if not REAL_FLIC.is_file():
    pytest.skip(f"{REAL_FLIC} absent")
  rows = flic.read_examples(REAL_FLIC)
  assert len(rows) == 5003
  assert len(flic.split_rows(rows, "train")) == 3987
  assert len(flic.split_rows(rows, "test")) == 1016
  assert not any(r["problem"] for r in rows)
  r = rows[0]
  assert r["filepath"] == "12-oclock-high-special-edition-00006361.jpg"
  assert r["moviename"] == "12-oclock-high-special-edition"
  assert r["currframe"] == 6361 and r["istrain"] and not r["istest"]
  # coords(:, 1) of examples(1) is (327.8776, 213.3125) in MATLAB's 1-based frame.
  np.testing.assert_allclose(r["joints"][0], [326.87756, 212.3125], atol=1e-4)
  np.testing.assert_allclose(r["torso_box"], [217.7541, 215.80336, 313.80557, 359.88055], atol=1e-4)
  assert r["joints_valid"].all() and r["joints"].shape == (11, 2)


def _expected(row):
  pts = row["coords"][:, list(joints_lib.FLIC_COORD_COLUMNS)].T - 1
  valid = ~np.isnan(pts).any(1)
  return np.where(valid[:, None], pts, 0), valid


def test_builder_on_fake_dataset(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  rows = fake.write_fake_flic(tmp_path / "manual", n_train=3, n_test=2, bad_rows=fake.FLIC_BAD_ROWS)
  builder = fake.build(flic.Flic, tmp_path / "data", tmp_path / "manual")
  assert builder.info.file_format.value == "array_record"
  for split, n in (("train", 3), ("test", 2)):
    got = fake.read_split(builder, split)
    want = [r for r in rows if r["split"] == split and r["bad"] is None]
    assert len(got) == len(want) == n
    for i, (ex, row) in enumerate(zip(got, want, strict=True)):
      joints, valid = _expected(row)
      assert ex["index"] == i
      assert ex["image"] == (tmp_path / "manual" / "images" / row["filepath"]).read_bytes()
      np.testing.assert_array_equal(ex["image_hw"], [48, 72])
      assert ex["joints"].dtype == np.float32 and ex["joints"].shape == (11, 2)
      np.testing.assert_allclose(ex["joints"], joints, atol=1e-4)
      np.testing.assert_array_equal(ex["joints_valid"], valid)
      np.testing.assert_array_equal(ex["joints_visible"], valid)
      box = row["torsobox"] - 1
      np.testing.assert_allclose(ex["torso_box"], box, atol=1e-4)
      np.testing.assert_allclose(ex["center"], (box[:2] + box[2:]) / 2, atol=1e-4)
      np.testing.assert_allclose(ex["scale"], (box[3] - box[1]) / 60.0, rtol=1e-5)
      np.testing.assert_array_equal(ex["head_box"], np.zeros(4))
      assert ex["head_size"] == 0
      rsho, lhip = joints[3], joints[6]
      torso = np.hypot(*(rsho - lhip)) if valid[3] and valid[6] else 0.0
      np.testing.assert_allclose(ex["torso_size"], torso, rtol=1e-5)
      assert ex["moviename"] == b"fake-movie" and ex["currframe"] == row["currframe"]
  # The first train row misses its left hip: torso size 0.
  assert fake.read_split(builder, "train")[0]["torso_size"] == 0
  text = caplog.text
  for reason in ("image file absent", "all joints missing", "unreadable image", "NaN coordinates"):
    assert reason in text
  assert "flic/train: skipped 4 rows" in text
  assert "fake-movie-00000106.jpg" in text  # each skip names its row
  # The counts the CLI reports (its exit status 3 and summary line).
  train_skips, test_skips = builder.skip_counters
  assert train_skips.dataset == "flic/train" and not test_skips.total
  assert train_skips.counts == {
    "image file absent": 1,
    "all joints missing": 1,
    "unreadable image": 1,
    "NaN coordinates on annotated joints (x or y alone)": 1,
  }
  assert not train_skips.joints


def test_read_examples_flags_bad_torso_boxes(tmp_path):
  bad_rows = ("flipped_torsobox", "flat_torsobox", "inf_joint", "far_joints")
  rows = fake.write_fake_flic(tmp_path, n_train=1, n_test=1, bad_rows=bad_rows)
  parsed = {r["filepath"]: r for r in flic.read_examples(tmp_path / "examples.mat")}
  problems = {r["bad"]: parsed[r["filepath"]]["problem"] for r in rows if r["bad"]}
  assert problems == {
    "flipped_torsobox": "degenerate torso box (x2 <= x1 or y2 <= y1)",
    "flat_torsobox": "degenerate torso box (x2 <= x1 or y2 <= y1)",
    "inf_joint": "NaN or infinite joint coordinates",
    "far_joints": None,  # checked against the image's size when it is read
  }
  flipped = next(r for r in rows if r["bad"] == "flipped_torsobox")
  assert parsed[flipped["filepath"]]["detail"].startswith("torsobox [")


def test_missing_manual_dir_and_annotation_file(tmp_path):
  fake.check_missing_sources(flic.Flic, tmp_path, "examples.mat")


def test_read_examples_rejects_bad_files(tmp_path):
  bad = tmp_path / "examples.mat"
  bad.write_bytes(b"not matlab")
  with pytest.raises(ValueError, match="examples.mat"):
    flic.read_examples(bad)
  with pytest.raises(FileNotFoundError, match="nope.mat"):
    flic.read_examples(tmp_path / "nope.mat")
