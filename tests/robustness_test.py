"""Bad input and faults through the public entry points: every expected error is
one line on stderr naming the flag, file or field, with a non-zero exit; batch
tools skip a bad item and say so (exit 3); a bad checkpoint never blocks a run
and nothing already written is lost. (Builders: data_robustness_test.py;
ground-truth files: evaluate_predictions_test.py.)"""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from conftest import SYNTHETIC_CONFIG, one_device_mesh, one_line_error, run_cli
from heatpose_jax import from_config, train
from heatpose_jax.core import sharding
from heatpose_jax.data import synthetic
from heatpose_jax.training import checkpoints

# The tests sharing the session fixture `tiny_run` run on one xdist worker (built once).
pytestmark = pytest.mark.xdist_group("tiny_run")


def _cli(*args, timeout=300, devices=1):
  return run_cli(*args, devices=devices, timeout=timeout)


_one_line_error = one_line_error


@pytest.mark.parametrize(
  ("args", "needles"),
  [
    (["--config.foo=3"], ["--config.foo", "'foo'"]),
    (["--config.model.pool_factor=5"], ["config.model.pool_factor=5"]),
    (["--config.dtype=float16"], ["config.dtype"]),
    (["--config.batch_size=12"], ["config.batch_size=12", "devices"]),
    (["--config.augment.scale=(1.5,0.5)"], ["config.augment.scale"]),
    (
      [f"--config={SYNTHETIC_CONFIG.replace('synthetic.py', 'flic.py')}:tiny"],
      ["'flic'", "data_prep.build"],
    ),
  ],
  ids=["unknown-field", "pool", "dtype", "batch-vs-devices", "scale-range", "unbuilt-dataset"],
)
def test_train_refuses_bad_configs_in_one_line(args, needles, tmp_path):
  config = [a for a in args if a.startswith("--config=")] or [f"--config={SYNTHETIC_CONFIG}:tiny"]
  rest = [a for a in args if not a.startswith("--config=")]
  r = _cli(
    "experiments.train",
    *config,
    f"--workdir={tmp_path / 'w'}",
    f"--config.data_dir={tmp_path / 'empty'}",
    *rest,
    devices=8,  # config.batch_size=12 must not divide by the devices
  )
  _one_line_error(r, *needles)
  assert not (tmp_path / "w" / "config.json").exists()


def test_config_file_errors_are_one_line(tmp_path):
  r = _cli("experiments.train", "--config=nope.py", f"--workdir={tmp_path}")
  _one_line_error(r, "--config=nope.py", "No such file")
  r = _cli("experiments.train", f"--config={SYNTHETIC_CONFIG}:bogus", f"--workdir={tmp_path}")
  _one_line_error(r, "unknown config argument 'bogus'")
  r = _cli("experiments.evaluate", f"--workdir={tmp_path}")
  _one_line_error(r, "config.json", "not a training run")


@pytest.fixture
def run_copy(tiny_run, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  return work


def test_resume_with_a_changed_model_keeps_the_run_config(run_copy, tiny_data):
  before = (run_copy / "config.json").read_text()
  data_dir, name = tiny_data
  r = _cli(
    "experiments.train",
    f"--config={SYNTHETIC_CONFIG}:tiny",
    f"--workdir={run_copy}",
    f"--config.data_dir={data_dir}",
    f"--config.tfds_config={name}",
    "--config.model.width=0.25",
  )
  _one_line_error(r, "the config's model has shape", "checkpoint 4")
  assert (run_copy / "config.json").read_text() == before


def _truncate_newest(workdir: Path) -> Path:
  """Cuts the biggest file of the newest checkpoint's parameters in half."""
  newest = max(
    (p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
  )
  files = [f for f in (newest / "params").rglob("*") if f.is_file()]
  big = max(files, key=lambda f: f.stat().st_size)
  big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
  return newest


def test_a_checkpoint_of_other_phases_is_a_config_error(tiny_run):
  # Read from the `train` item's metadata alone (not every item's).
  mngr = checkpoints.manager(str(tiny_run), create=False)
  step = max(mngr.all_steps())
  checkpoints.check_phases(mngr, step, {"coarse": 0, "fine": 0, "joint": 0})
  with pytest.raises(checkpoints.ShapeMismatch, match=r"\['coarse', 'fine', 'joint'\].*added"):
    checkpoints.check_phases(mngr, step, {"coarse": 0, "fine": 0, "joint": 0, "polish": 0})
  mngr.close()


# A failed restore's leftover reads reported when collected would fail the test (issue 23).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_checkpoint_is_skipped_and_kept_aside(
  tiny_run, run_copy, tiny_config, caplog, capfd
):
  bad = _truncate_newest(run_copy)
  assert bad.name == "4"
  config = tiny_config((2, 1, 1), checkpoint_every=2)
  result = train.train_and_evaluate(config, str(run_copy), mesh=one_device_mesh())  # step 3 → 4
  assert result["step"] == 4
  skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
  assert len(skipped) == 1 and "checkpoints/4 skipped (" in skipped[0] and "moved to" in skipped[0]
  out, err = capfd.readouterr()
  assert f"resumed from {run_copy} step 3" in out
  assert "Traceback" not in out + err and "Event loop is closed" not in err, err[-3000:]
  kept = [p.name for p in (run_copy / "checkpoints").iterdir()]
  assert "4" in kept and any(n.startswith("4.unreadable-") for n in kept)  # nothing lost
  # Steps 3 -> 4 again: the parameters of the run that was never interrupted.
  abstract = from_config.abstract_params(config, one_device_mesh())
  want, _ = checkpoints.restore_params(str(tiny_run), abstract, step=4)
  got, _ = checkpoints.restore_params(str(run_copy), abstract, step=4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, want)


def _nan_checkpoint(tiny_run, workdir: Path, config):
  """`workdir` with one checkpoint whose parameters are all NaN (written behind the guard)."""
  mesh = sharding.make_mesh()
  params, _ = checkpoints.restore_params(str(tiny_run), from_config.abstract_params(config, mesh))
  nan = jax.tree.map(lambda x: np.full(x.shape, np.nan, np.float32), params)
  workdir.mkdir()
  shutil.copy(tiny_run / "config.json", workdir / "config.json")
  mngr = checkpoints.manager(str(workdir))
  mngr.save(
    4,
    args=ocp.args.Composite(
      params=ocp.args.StandardSave(nan), train=ocp.args.StandardSave({"step": 4})
    ),
  )
  mngr.wait_until_finished()
  mngr.close()


def test_nan_checkpoints_are_refused_by_evaluate_and_predict(tiny_run, tiny_config, tmp_path):
  work = tmp_path / "nan"
  _nan_checkpoint(tiny_run, work, tiny_config())
  with pytest.raises(ValueError, match="non-finite"):
    checkpoints.restore_params(
      str(work), from_config.abstract_params(tiny_config(), sharding.make_mesh())
    )
  _one_line_error(
    _cli("experiments.evaluate", f"--workdir={work}"), "no usable checkpoint", "non-finite"
  )
  photo = tmp_path / "p.png"
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photo)
  r = _cli(
    "experiments.predict",
    f"--workdir={work}",
    f"--images={photo}",
    f"--output_dir={tmp_path / 'o'}",
  )
  _one_line_error(r, "non-finite")


def test_evaluate_names_a_missing_split_or_step(tiny_run):
  _one_line_error(
    _cli("experiments.evaluate", f"--workdir={tiny_run}", "--split=nope"), "no split 'nope'"
  )
  _one_line_error(_cli("experiments.evaluate", f"--workdir={tiny_run}", "--step=999"), "step 999")


def test_predict_flags_are_checked(tiny_run, tmp_path):
  w = f"--workdir={tiny_run}"
  o = f"--output_dir={tmp_path / 'o'}"
  _one_line_error(
    _cli("experiments.predict", w, o, f"--images={tmp_path}/*.jpg"), "matches no file"
  )
  photo = tmp_path / "p.png"
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photo)
  _one_line_error(_cli("experiments.predict", w, o, f"--images={photo}", "--scales=0,1"), "scales")
  _one_line_error(
    _cli("experiments.predict", w, o, f"--images={photo}", "--torso_box=1,2,3"), "--torso_box"
  )
  _one_line_error(_cli("experiments.predict", w, o, f"--video={tmp_path}/none.mp4"), "--video")
  _one_line_error(_cli("experiments.predict", w, o), "--images", "--video")


def _png_claiming(width: int, height: int) -> bytes:
  """A 1×1 PNG whose header says width × height (what a decompression bomb's header
  says; writing a real one takes seconds)."""
  buf = io.BytesIO()
  Image.new("1", (1, 1)).save(buf, format="PNG")
  png = bytearray(buf.getvalue())
  # The IHDR chunk follows the 8-byte signature: length, b"IHDR", width, height, ..., CRC.
  png[16:24] = struct.pack(">II", width, height)
  png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
  return bytes(png)


def test_predict_skips_a_decompression_bomb_and_reads_16_bit_images(tiny_run, tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  image = synthetic.render_example(np.random.default_rng(3), 60, 80)["image"]
  Image.fromarray(image).save(photos / "a_8bit.png")
  grey = image.mean(-1).astype(np.uint16)
  Image.fromarray(grey * 257).save(photos / "b_16bit.png")
  Image.fromarray(grey.astype(np.uint8)).save(photos / "c_grey.png")
  # A tiny file whose header claims 50000 × 50000 pixels.
  (photos / "d_bomb.png").write_bytes(_png_claiming(50000, 50000))
  out = tmp_path / "out"
  r = _cli(
    "experiments.predict", f"--workdir={tiny_run}", f"--images={photos}", f"--output_dir={out}"
  )
  assert r.returncode == 3, r.stderr[-3000:]
  assert "d_bomb.png" in r.stdout and "too many pixels" in r.stdout
  preds = {
    Path(p["image"]).name: p["joints"]
    for p in json.loads((out / "predictions.json").read_text())["predictions"]
  }
  assert sorted(preds) == ["a_8bit.png", "b_16bit.png", "c_grey.png"]
  # The 16-bit image is scaled, not clipped to white: it predicts as its 8-bit twin.
  assert preds["b_16bit.png"] == preds["c_grey.png"]
