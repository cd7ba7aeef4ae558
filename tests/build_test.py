"""Tests of the synthetic TFDS builder and the `python -m data_prep.build` CLI."""

import io
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import app
from PIL import Image

import data_prep  # noqa: F401  (registers the builders)
from data_prep import build
from heatpose_jax.core import workdir_lock
from heatpose_jax.data import synthetic_dataset as synthetic_builder

ROOT = Path(__file__).resolve().parents[1]
VERSION = str(synthetic_builder.Synthetic.VERSION)
FEATURES = {
  "image_hw": (np.int32, (2,)),
  "joints": (np.float32, (14, 2)),
  "joints_clean": (np.float32, (14, 2)),
  "distractor_joints": (np.float32, (14, 2)),
  "joints_valid": (np.bool_, (14,)),
  "joints_visible": (np.bool_, (14,)),
  "center": (np.float32, (2,)),
  "head_box": (np.float32, (4,)),
  "torso_box": (np.float32, (4,)),
}


def _run(args, **kw):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw
  )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = build.build("synthetic", data_dir, config="tiny")
  return data_dir, builder


def test_in_process_build_reads_back(tiny):
  data_dir, builder = tiny
  cfg = synthetic_builder.CONFIGS["tiny"]
  assert Path(builder.data_dir) == data_dir / "synthetic" / "tiny" / VERSION
  assert (Path(builder.data_dir) / "dataset_info.json").exists()
  assert not list((data_dir / "synthetic" / "tiny").glob("incomplete.*"))
  reread = tfds.builder("synthetic/tiny", data_dir=data_dir)
  assert reread.is_prepared()
  for split, n in (("train", cfg.num_train), ("test", cfg.num_test)):
    source = reread.as_data_source(split)
    assert len(source) == n
    for i in (0, n - 1):
      ex = source[i]
      assert ex["index"] == i  # file order
      for key, (dtype, shape) in FEATURES.items():
        assert ex[key].dtype == dtype and ex[key].shape == shape, key
      with Image.open(io.BytesIO(ex["image"])) as im:
        assert im.format == "JPEG"
        assert (im.height, im.width) == tuple(ex["image_hw"]) == (cfg.height, cfg.width)
      assert ex["head_size"] > 0 and ex["scale"] > 0 and not ex["has_distractor"]
      # The stored example is the one make_example renders (deterministic build).
      want = synthetic_builder.make_example(cfg, split, i)
      assert ex["image"] == want["image"]
      np.testing.assert_array_equal(ex["joints"], want["joints"])


def test_builder_from_directory_without_data_prep(tiny):
  data_dir, _ = tiny
  version_dir = data_dir / "synthetic" / "tiny" / VERSION
  code = (
    "import sys, tensorflow_datasets as tfds\n"
    f"b = tfds.builder_from_directory({str(version_dir)!r})\n"
    "ex = b.as_data_source('test')[3]\n"
    "assert 'data_prep' not in sys.modules, 'data_prep was imported'\n"
    "print(len(b.as_data_source('train')), ex['joints'].shape, ex['index'])\n"
  )
  out = _run(["-c", code], timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["128", "(14,", "2)", "3"]


def test_cli_builds_custom_config(tmp_path):
  out = _run(
    [
      "-m", "data_prep.build", "--dataset=synthetic", "--config=tiny", "--num_train=12",
      "--num_test=5", "--seed=3", f"--data_dir={tmp_path}",
    ],
    timeout=120,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr
  name = "tiny-num_test5-num_train12-seed3"
  version_dir = tmp_path / "synthetic" / name / VERSION
  assert str(version_dir) in out.stdout
  assert "train: 12 examples" in out.stdout and "test: 5 examples" in out.stdout
  # A custom config reads back by name (from its files) after import data_prep.
  b = tfds.builder(f"synthetic/{name}", data_dir=tmp_path)
  assert len(b.as_data_source("train")) == 12
  cfg = synthetic_builder.custom_config("tiny", num_train=12, num_test=5, seed=3)
  assert cfg.name == name
  want = synthetic_builder.make_example(cfg, "test", 4)
  assert b.as_data_source("test")[4]["image"] == want["image"]


def test_cli_errors_name_the_flag(tmp_path):
  with pytest.raises(app.UsageError, match="--manual_dir is required"):
    build.build("flic", tmp_path)
  with pytest.raises(app.UsageError, match="--manual_dir=.*not a directory"):
    build.build("mpii", tmp_path, manual_dir=tmp_path / "absent")
  with pytest.raises(app.UsageError, match="--config=huge"):
    build.build("synthetic", tmp_path, config="huge")
  with pytest.raises(app.UsageError, match="--seed does not apply"):
    build.build("lsp", tmp_path, manual_dir=tmp_path, seed=1)
  with pytest.raises(app.UsageError, match="--config: --dataset=flic has no configs"):
    build.build("flic", tmp_path, manual_dir=tmp_path, config="tiny")
  with pytest.raises(app.UsageError, match="--dataset=no_such_dataset: unknown"):
    build.build("no_such_dataset", tmp_path)
  with pytest.raises(ValueError, match="--config=coco: give --annotations=SPLIT=FILE.json"):
    build.build("coco_keypoints", tmp_path)  # `coco`'s TFDS name: found, but no files
  with pytest.raises(ValueError, match="bad height"):
    build.build("synthetic", tmp_path, config="tiny", height=4)
  out = _run(["-m", "data_prep.build", "--dataset=flic", f"--data_dir={tmp_path}"], timeout=60)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines() == [
    "error: --manual_dir is required for --dataset=flic (see data_prep/manual_dirs.md)."
  ]


def _assert_not_built(data_dir: Path, name: str, **overrides):
  cfg = synthetic_builder.custom_config("tiny", **overrides)
  assert cfg.name == name
  assert not synthetic_builder.Synthetic(data_dir=data_dir, config=cfg).is_prepared()
  assert not (data_dir / "synthetic" / name / VERSION).exists()
  assert not list(data_dir.rglob("dataset_info.json"))


def test_failed_build_leaves_nothing_and_rebuild_succeeds(tmp_path, monkeypatch):
  real = synthetic_builder.make_example

  def flaky(cfg, split, index):
    if split == "test" and index == 5:
      raise RuntimeError("boom")
    return real(cfg, split, index)

  monkeypatch.setattr(synthetic_builder, "make_example", flaky)
  with pytest.raises(RuntimeError, match="boom"):
    build.build("synthetic", tmp_path, config="tiny", num_train=20, num_test=10)
  name = "tiny-num_test10-num_train20"
  _assert_not_built(tmp_path, name, num_train=20, num_test=10)
  assert not list((tmp_path / "synthetic" / name).glob("incomplete.*"))  # cleaned up
  monkeypatch.setattr(synthetic_builder, "make_example", real)
  b = build.build("synthetic", tmp_path, config="tiny", num_train=20, num_test=10)
  assert b.is_prepared() and len(b.as_data_source("test")) == 10


def test_killed_build_leaves_no_complete_dataset(tmp_path):
  args = ["--dataset=synthetic", "--config=tiny", "--num_train=64", "--num_test=256"]
  args += ["--height=32", "--width=32"]
  name = "tiny-height32-num_test256-num_train64-width32"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(
    [sys.executable, "-m", "data_prep.build", *args, f"--data_dir={tmp_path}"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    # Kill it once the first split's shard is written into the temporary dir.
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f"synthetic/{name}/incomplete.*/*.array_record*")):
      assert proc.poll() is None, "the build ended before it could be killed"
      assert time.monotonic() < deadline
      time.sleep(0.02)
    # One build per data dir: a second one (of any dataset) is refused at once.
    with pytest.raises(
      workdir_lock.InUse,
      match=rf"--data_dir={re.escape(str(tmp_path))} is in use .*pid {proc.pid} ",
    ):
      build.build("synthetic", tmp_path, config="tiny", num_train=4, num_test=4)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  assert list(tmp_path.glob(f"synthetic/{name}/incomplete.*"))  # killed mid-way
  # The kernel released the dead build's lock: the next build starts.
  assert f"pid {proc.pid} " in (tmp_path / workdir_lock.BUILD_LOCK).read_text()
  _assert_not_built(tmp_path, name, num_train=64, num_test=256, height=32, width=32)
  b = build.build(
    "synthetic", tmp_path, config="tiny", num_train=64, num_test=256, height=32, width=32
  )
  assert b.is_prepared() and len(b.as_data_source("test")) == 256
  version_dir = tmp_path / "synthetic" / name / VERSION
  assert len(tfds.builder_from_directory(version_dir).as_data_source("train")) == 64


def test_configs():
  cfgs = synthetic_builder.CONFIGS
  assert {"default", "tiny", "distractor", "noisy"} <= set(cfgs)
  assert cfgs["noisy"].label_noise == 1.5 and cfgs["distractor"].distractor_prob == 1.0
  assert synthetic_builder.custom_config("tiny") is cfgs["tiny"]
  assert synthetic_builder.custom_config("tiny", label_noise=0.5).name == "tiny-label_noise0.5"
  with pytest.raises(ValueError, match="no field 'colour'"):
    synthetic_builder.custom_config("tiny", colour=1)
  # default and noisy hold the same images and clean joints; only `joints` differ.
  a = synthetic_builder.make_example(cfgs["default"], "train", 0)
  b = synthetic_builder.make_example(cfgs["noisy"], "train", 0)
  assert a["image"] == b["image"]
  np.testing.assert_array_equal(a["joints_clean"], b["joints_clean"])
  assert not np.array_equal(a["joints"], b["joints"])
  d = synthetic_builder.make_example(cfgs["distractor"], "train", 0)
  assert d["has_distractor"] and np.abs(d["distractor_joints"]).sum() > 0


def test_killed_overwrite_keeps_the_previous_dataset(tmp_path, caplog):
  overrides = {"num_train": 64, "num_test": 256, "height": 32, "width": 32}
  name = "tiny-height32-num_test256-num_train64-width32"
  version_dir = tmp_path / "synthetic" / name / VERSION
  build.build("synthetic", tmp_path, config="tiny", **overrides)
  info = (version_dir / "dataset_info.json").stat()
  args = [f"--{k}={v}" for k, v in overrides.items()]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(
    [sys.executable, "-m", "data_prep.build", "--dataset=synthetic", "--config=tiny", *args]
    + ["--overwrite", f"--data_dir={tmp_path}"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  staged = f"{build.STAGING_PREFIX}synthetic.*/synthetic/{name}/incomplete.*/*.array_record*"
  try:
    # Kill the rebuild once it has written a shard of the new dataset.
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(staged)):
      assert proc.poll() is None, "the rebuild ended before it could be killed"
      assert time.monotonic() < deadline
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  # The previous dataset is where it was, untouched and readable.
  assert (version_dir / "dataset_info.json").stat().st_ino == info.st_ino
  source = tfds.builder_from_directory(version_dir).as_data_source("test")
  assert len(source) == 256 and source[255]["index"] == 255
  # The next build reuses it and names the killed rebuild's leftovers.
  caplog.set_level(logging.WARNING)
  b = build.build("synthetic", tmp_path, config="tiny", **overrides)
  assert b.is_prepared() and "stale directories" in caplog.text
  assert build.STAGING_PREFIX + "synthetic." in caplog.text
