"""LSP builder: the real lsp400 (300 / 100) and fake LSPet / LSP layouts."""

import logging
from pathlib import Path

import fake_datasets as fake
import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from data_prep import lsp

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_LSP = DATA / "lsp400"


def test_real_lsp400(tmp_path):
  if not (REAL_LSP / "joints.mat").is_file():
    pytest.skip(f"{REAL_LSP} absent")
  builder = fake.build(lsp.Lsp, tmp_path / "data", REAL_LSP)
  train, test = fake.read_split(builder, "train"), fake.read_split(builder, "test")
  assert (len(train), len(test)) == (300, 100)
  raw = sio.loadmat(REAL_LSP / "joints.mat")["joints"]  # 14×3×400, 1-based
  for n, ex in enumerate(train + test):
    assert ex["index"] == (n if n < 300 else n - 300)
    with Image.open(REAL_LSP / "images" / f"im{n + 1:05d}.jpg") as im:
      np.testing.assert_array_equal(ex["image_hw"], [im.height, im.width])
    flag = raw[:, 2, n] == 1
    # Every flag-1 joint is annotated; flag-0 ones hold off-image placeholders.
    np.testing.assert_array_equal(ex["joints_visible"], flag)
    np.testing.assert_array_equal(ex["joints_valid"], flag)
    np.testing.assert_allclose(ex["joints"][flag], raw[flag, :2, n] - 1, atol=1e-4)
    assert not ex["joints"][~flag].any()
  assert train[0]["image"] == (REAL_LSP / "images" / "im00001.jpg").read_bytes()
  # Every real image decodes and every joint passes the checks: nothing skipped.
  assert [c.describe() for c in builder.skip_counters] == [
    "lsp/train: nothing skipped",
    "lsp/test: nothing skipped",
  ]


def _expected(info, k):
  xy = info["xy"][k] - 1
  h, w = info["hw"][k]
  inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
  valid = info["visible"][k] | inside
  return np.where(valid[:, None], xy, 0), valid


@pytest.mark.parametrize("layout", ["lspet", "lsp"])
def test_fake_layouts(tmp_path, caplog, layout):
  caplog.set_level(logging.WARNING)
  info = fake.write_fake_lsp(tmp_path / "manual", n=8, layout=layout)
  builder = fake.build(lsp.Lsp, tmp_path / "data", tmp_path / "manual")
  ids = {"train": [0, 4, 5], "test": [6, 7]}  # 6 train / 2 test; 1, 2, 3 are bad
  for split, want in ids.items():
    got = fake.read_split(builder, split)
    assert len(got) == len(want)
    for i, (ex, k) in enumerate(zip(got, want, strict=True)):
      joints, valid = _expected(info, k)
      assert ex["index"] == i
      np.testing.assert_array_equal(ex["image_hw"], info["hw"][k])
      assert ex["joints"].dtype == np.float32 and ex["joints"].shape == (14, 2)
      np.testing.assert_allclose(ex["joints"], joints, atol=1e-5)
      np.testing.assert_array_equal(ex["joints_valid"], valid)
      np.testing.assert_array_equal(ex["joints_visible"], info["visible"][k])
      # Odd images: joints 6, 7 occluded; LSPet leaves them unannotated.
      if k % 2:
        assert ex["joints_valid"][[6, 7]].all() == (layout == "lsp")
      pts = joints[valid]
      np.testing.assert_allclose(ex["center"], (pts.min(0) + pts.max(0)) / 2, atol=1e-4)
      np.testing.assert_allclose(ex["torso_size"], np.hypot(*(joints[8] - joints[3])), rtol=1e-5)
      torso = joints[[9, 8, 3, 2]]
      np.testing.assert_allclose(ex["torso_box"], [*torso.min(0), *torso.max(0)], atol=1e-5)
      assert ex["head_size"] == 0 and not ex["head_box"].any()
  for reason in ("image file absent", "unreadable image", "NaN or infinite joint coordinates"):
    assert reason in caplog.text
  assert "lsp/train: skipped 3 rows" in caplog.text


def test_configured_split_and_default_rule(tmp_path):
  fake.write_fake_lsp(tmp_path / "manual", n=6, bad={})
  config = lsp.LspConfig(name="first2", num_train=2)
  builder = fake.build(lsp.Lsp, tmp_path / "data", tmp_path / "manual", config=config)
  assert len(builder.as_data_source("train")) == 2 and len(builder.as_data_source("test")) == 4
  assert lsp.default_num_train(2000) == 1000
  assert lsp.default_num_train(400) == 300
  assert lsp.default_num_train(10000) == 7500


def test_bad_inputs(tmp_path):
  manual = fake.check_missing_sources(lsp.Lsp, tmp_path, "joints.mat")
  sio.savemat(manual / "joints.mat", {"joints": np.zeros((14, 2, 5))})
  with pytest.raises(ValueError, match=r"joints\.mat: 'joints' has shape \(14, 2, 5\)"):
    lsp.read_joints(manual / "joints.mat")
  fake.write_fake_lsp(manual, n=4, bad={})
  with pytest.raises(ValueError, match="num_train=9"):
    fake.build(lsp.Lsp, tmp_path / "d2", manual, config=lsp.LspConfig(name="x", num_train=9))
  for n in (0, 4):  # a split would be empty
    with pytest.raises(ValueError, match=rf"num_train={n} outside 1\.\.3: both splits"):
      config = lsp.LspConfig(name=f"n{n}", num_train=n)
      fake.build(lsp.Lsp, tmp_path / "d3", manual, config=config)
