"""Bad data that looks good, driven through the builders and `python -m data_prep.build`.

Each case is one row of the rules in `docs/data.md`: bad image files (a JPEG cut
short, a text file, a 16-bit PNG, a decompression bomb), bad values (joints at -1000,
1e9, NaN or infinity, upside-down boxes, zero or negative scales, far-off centres),
a split left empty, the CLI's exit statuses, and `--overwrite` keeping the
previous dataset until the new one is complete.
"""

import collections
import logging
import os
import subprocess
import sys
from pathlib import Path

import fake_datasets as fake
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import build, common, flic, lsp, mpii

ROOT = Path(__file__).resolve().parents[1]
LSP_VERSION = str(lsp.Lsp.VERSION)

# The counted reason of each bad kind of the fakes (`fake_datasets`).
REASON = {
  "missing_image": common.ABSENT,
  "garbage_image": common.UNREADABLE,
  "truncated_image": common.UNREADABLE,
  "text_image": common.UNREADABLE,
  "png16_image": "unsupported pixel format (mode I;16)",
  "bomb_image": common.BOMB,
  "inf_joint": common.NON_FINITE_JOINTS,
  "inf": common.NON_FINITE_JOINTS,
  "all_far": common.ALL_FAR,
  "flipped_torsobox": "degenerate torso box (x2 <= x1 or y2 <= y1)",
  "flat_torsobox": "degenerate torso box (x2 <= x1 or y2 <= y1)",
  "far_torsobox": common.FAR_CENTER,
  "zero_scale": common.BAD_SCALE,
  "negative_scale": common.BAD_SCALE,
  "test_negative_scale": common.BAD_SCALE,
  "flipped_head": "degenerate head box (x2 <= x1 or y2 <= y1)",
  "far_objpos": common.FAR_CENTER,
}
# What PIL's message says, for the image kinds skipped as unreadable.
PIL_SAYS = {"truncated_image": "truncated", "text_image": "cannot identify image file"}


def _cli(*args, timeout=120):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run(
    [sys.executable, "-m", "data_prep.build", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _assert_one_line_error(out, *needles):
  """Exit 1, one `error:` line last on stderr naming `needles`, no traceback."""
  assert out.returncode == 1, (out.stdout, out.stderr)
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), out.stderr
  assert out.stderr.count("error: ") == 1 and "Traceback" not in out.stderr, out.stderr
  for needle in needles:
    assert needle in last, last


def _skip_logged(caplog, reason: str, *names: str) -> bool:
  """Whether one warning names the reason and every one of `names`."""
  return any(reason in r.message and all(n in r.message for n in names) for r in caplog.records)


def _counts(builder, split):
  (skips,) = [c for c in builder.skip_counters if c.dataset.endswith("/" + split)]
  return skips


def test_flic_bad_images_and_values(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  rows = fake.write_fake_flic(tmp_path / "manual", n_train=2, n_test=1, bad_rows=fake.FLIC_MORE_BAD)
  builder = fake.build(flic.Flic, tmp_path / "data", tmp_path / "manual")
  want = [r for r in rows if r["split"] == "train" and not r["skipped"]]
  got = fake.read_split(builder, "train")
  assert [e["currframe"] for e in got] == [r["currframe"] for r in want]
  assert len(got) == 3  # 2 good rows and the far_joints row
  for row in rows:
    if row["skipped"]:
      reason = REASON[row["bad"]]
      assert _skip_logged(caplog, reason, row["filepath"], PIL_SAYS.get(row["bad"], "")), row
  # far_joints: l_shoulder at x = -1000 and r_wrist at y = 1e9 are stored as missing.
  (ex,) = [e for e, r in zip(got, want, strict=True) if r["bad"] == "far_joints"]
  np.testing.assert_array_equal(np.flatnonzero(~ex["joints_valid"]), [0, 5])
  assert not ex["joints"][[0, 5]].any() and not ex["joints_visible"][[0, 5]].any()
  assert np.abs(ex["joints"]).max() < 100
  assert _skip_logged(caplog, common.FAR_JOINT, "l_shoulder at (-1001, ", "r_wrist at (")
  skips = _counts(builder, "train")
  kinds = [r["bad"] for r in rows if r["skipped"]]
  assert skips.counts == collections.Counter(REASON[k] for k in kinds)
  assert skips.joints == {common.FAR_JOINT: 2}
  assert "flic/train: skipped 11 rows" in caplog.text
  assert not _counts(builder, "test").total


def test_mpii_bad_images_and_values(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  info = fake.write_fake_mpii(tmp_path / "manual", split_file="h5", extra_bad=fake.MPII_MORE_BAD)
  builder = fake.build(mpii.Mpii, tmp_path / "data", tmp_path / "manual")
  by_kind = {p["kind"]: p for p in info["persons"]}
  for kind in fake.MPII_MORE_BAD:
    if kind != "far_joints":
      p = by_kind[kind]
      where = f"annolist({p['image_index'] + 1}).annorect(1)"
      assert _skip_logged(caplog, REASON[kind], where, p["image_name"]), kind
  train = fake.read_split(builder, "train")
  p = by_kind["far_joints"]
  (ex,) = [e for e in train if e["image_index"] == p["image_index"]]
  np.testing.assert_array_equal(np.flatnonzero(~ex["joints_valid"]), [0, 9])
  assert not ex["joints_visible"][[0, 9]].any() and not ex["joints"][[0, 9]].any()
  assert ex["scale"] > 0 and ex["head_size"] > 0
  assert _counts(builder, "train").joints == {common.FAR_JOINT: 2}
  # The test rectangle with a negative scale is skipped; the other two are kept.
  test = fake.read_split(builder, "test")
  assert len(test) == 2 and all(e["scale"] > 0 for e in test)
  assert _counts(builder, "test").counts == {common.BAD_SCALE: 1}
  for ex in train + test + fake.read_split(builder, "validation"):
    x1, y1, x2, y2 = ex["torso_box"]
    assert x2 > x1 and y2 > y1 and np.isfinite(ex["center"]).all()


def test_lsp_bad_images_and_values(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  bad = {1: "truncated_image", 2: "text_image", 3: "png16_image", 4: "bomb_image", 5: "inf"}
  bad |= {6: "far_joints", 7: "all_far"}
  info = fake.write_fake_lsp(tmp_path / "manual", n=12, bad=bad)
  builder = fake.build(lsp.Lsp, tmp_path / "data", tmp_path / "manual")
  for k, kind in bad.items():
    if kind != "far_joints":
      assert _skip_logged(caplog, REASON[kind], f"im{k + 1:05d}.jpg", PIL_SAYS.get(kind, "")), kind
  train = fake.read_split(builder, "train")  # the first 9 images, 6 of them bad
  assert len(train) == 3
  ex = train[1]  # image 6: r_ankle at x = -1000, r_knee at y = 1e9
  np.testing.assert_array_equal(np.flatnonzero(~ex["joints_valid"]), [0, 1])
  assert not ex["joints"][[0, 1]].any()
  # centre and scale come from the remaining joints' extent.
  pts = info["xy"][6][2:] - 1
  np.testing.assert_allclose(ex["center"], (pts.min(0) + pts.max(0)) / 2, atol=1e-4)
  assert 0 < ex["scale"] < 1
  skips = _counts(builder, "train")
  assert sum(skips.counts.values()) == 6 and skips.joints == {common.FAR_JOINT: 2}


def test_decompression_bomb_warning_is_skipped(tmp_path, monkeypatch, caplog):
  # Images 0..5 have 40², 41², ..., 45² pixels; PIL warns (not raises) between
  # MAX_IMAGE_PIXELS and twice that: 44² and 45² are such bombs here.
  caplog.set_level(logging.WARNING)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1900)
  fake.write_fake_lsp(tmp_path / "manual", n=6, bad={}, hw=(40, 40))
  config = lsp.LspConfig(name="three", num_train=3)
  builder = fake.build(lsp.Lsp, tmp_path / "data", tmp_path / "manual", config=config)
  assert len(builder.as_data_source("train")) == 3 and len(builder.as_data_source("test")) == 1
  assert _counts(builder, "test").counts == {common.BOMB: 2}
  assert _skip_logged(caplog, common.BOMB, "im00005.jpg", "exceeds limit")


def test_all_rows_bad_is_an_empty_split_error(tmp_path):
  bad_rows = ("truncated_image", "flipped_torsobox")
  fake.write_fake_flic(tmp_path / "manual", n_train=0, n_test=1, bad_rows=bad_rows)
  with pytest.raises(common.EmptySplitError, match=r"^flic/train: split is empty.*skipped 2 rows"):
    fake.build(flic.Flic, tmp_path / "data", tmp_path / "manual")
  assert not list((tmp_path / "data").rglob("dataset_info.json"))
  assert not list((tmp_path / "data").rglob("incomplete.*"))
  out = _cli("--dataset=flic", f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={tmp_path}/d")
  _assert_one_line_error(out, "flic/train: split is empty", "unreadable image: 1")


def test_cli_exit_statuses(tmp_path):
  manual = tmp_path / "manual"
  fake.write_fake_lsp(manual, n=4, bad={})
  out = _cli("--dataset=lsp", f"--manual_dir={manual}", f"--data_dir={tmp_path}/clean")
  assert out.returncode == 0, out.stderr
  assert "skipped" not in out.stdout and "test: 1 examples" in out.stdout

  fake.write_fake_lsp(manual, n=4, bad={1: "bomb_image", 2: "far_joints"})
  out = _cli("--dataset=lsp", f"--manual_dir={manual}", f"--data_dir={tmp_path}/skips")
  assert out.returncode == 3, out.stderr
  summary = out.stdout.strip().splitlines()[-1]
  assert summary.startswith("skipped 1 rows and marked 2 joints invalid: lsp/train: ")
  assert f"{common.BOMB}: 1" in summary and f"{common.FAR_JOINT}: 2" in summary
  assert "Traceback" not in out.stderr and "im00002.jpg" in out.stderr  # the file is named

  _assert_one_line_error(_cli("--dataset=nope", f"--data_dir={tmp_path}"), "--dataset=nope")
  _assert_one_line_error(_cli("--dataset=lsp", f"--data_dir={tmp_path}"), "--manual_dir")
  absent = tmp_path / "absent"
  _assert_one_line_error(
    _cli("--dataset=lsp", f"--manual_dir={absent}", f"--data_dir={tmp_path}"), str(absent)
  )
  (manual / "joints.mat").unlink()
  args = ("--dataset=lsp", f"--manual_dir={manual}", f"--data_dir={tmp_path}/e")
  _assert_one_line_error(_cli(*args), "joints.mat not found", "manual_dirs.md")
  out = _cli(*args, "--verbosity=1")  # the traceback, for a developer
  assert out.returncode == 1 and "Traceback" in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("error: ")


def _build_lsp(data_dir, manual, **kwargs):
  return build.build("lsp", data_dir, manual_dir=manual, **kwargs)


def _snapshot(version_dir: Path) -> list:
  """(image bytes, joints) of every train example, read without the builder class."""
  source = tfds.builder_from_directory(version_dir).as_data_source("train")
  return [(source[i]["image"], source[i]["joints"].tolist()) for i in range(len(source))]


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_complete(tmp_path, monkeypatch):
  data, manual = tmp_path / "data", tmp_path / "manual"
  version_dir = data / "lsp" / "default" / LSP_VERSION
  fake.write_fake_lsp(manual, n=8, bad={}, seed=0)
  _build_lsp(data, manual)
  old = _snapshot(version_dir)

  def leftovers():
    return list(data.glob(f"{build.STAGING_PREFIX}*")) + list(data.rglob("incomplete.*"))

  # 1. A rebuild that raises midway (after some examples were written).
  fake.write_fake_lsp(manual, n=8, bad={}, seed=1)
  real, calls = lsp.example, []

  def flaky(*args):
    calls.append(1)
    if len(calls) == 4:
      raise RuntimeError("boom")
    return real(*args)

  monkeypatch.setattr(lsp, "example", flaky)
  with pytest.raises(RuntimeError, match="boom"):
    _build_lsp(data, manual, overwrite=True)
  monkeypatch.setattr(lsp, "example", real)
  assert _snapshot(version_dir) == old and not leftovers()

  # 2. A rebuild whose data went bad: an empty split, the old dataset stays.
  fake.write_fake_lsp(manual, n=8, bad=dict.fromkeys(range(6), "truncated_image"), seed=1)
  with pytest.raises(common.EmptySplitError, match="lsp/train"):
    _build_lsp(data, manual, overwrite=True)
  assert _snapshot(version_dir) == old and not leftovers()
  assert tfds.builder("lsp", data_dir=data).is_prepared()

  # 3. A successful rebuild replaces it; then again with the two-rename fallback.
  fake.write_fake_lsp(manual, n=8, bad={}, seed=1)
  b = _build_lsp(data, manual, overwrite=True)
  new = _snapshot(version_dir)
  assert new != old and len(new) == len(old) and not leftovers()
  assert b.is_prepared() and len(b.as_data_source("test")) == 2 and b.skip_counters
  fake.write_fake_lsp(manual, n=8, bad={}, seed=2)
  monkeypatch.setattr(build, "_exchange", lambda a, b: False)
  _build_lsp(data, manual, overwrite=True)
  assert _snapshot(version_dir) not in (old, new) and not leftovers()
  # Without --overwrite a prepared dataset is reused, untouched.
  fake.write_fake_lsp(manual, n=8, bad={}, seed=3)
  before = _snapshot(version_dir)
  assert _build_lsp(data, manual).skip_counters == []
  assert _snapshot(version_dir) == before


def test_far_outside_is_one_image_side_beyond_the_image():
  # A 48×72 (h×w) image covers x in [-0.5, 71.5], y in [-0.5, 47.5].
  hw = (48, 72)
  pts = [[-72.5, 0], [143.5, 47.5 + 48], [-72.6, 0], [143.6, 0], [0, -48.6], [0, 95.6]]
  np.testing.assert_array_equal(common.far_outside(pts, hw), [0, 0, 1, 1, 1, 1])
  assert not common.far_outside([[np.nan, 0]], hw)[0]  # NaN is another rule's
