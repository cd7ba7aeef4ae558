"""Any split size works (issue 18, class 3): evaluation and prediction score every
example exactly once for any size >= 1 and any batch size (1, B - 1, B, B + 1,
2B + 1, fewer examples than devices), and an evaluation split with nothing to
score stops training before its first step, in one line.

Through the public API (`input_pipeline.make_dataset`, `evaluator.Evaluator`,
`Predictor`, `train.train_and_evaluate`) and the CLIs (`experiments.evaluate`,
`experiments.train`). Before the fix the last-batch padding could not pad more
than the split's own length, so a split shorter than half a batch gave no batch
and evaluation died with `KeyError: 'joints'` after training.
"""

import io
import json
import shutil

import jax
import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from conftest import SYNTHETIC_CONFIG, one_device_mesh, run_cli
from heatpose_jax import Predictor, from_config, train
from heatpose_jax.core import sharding
from heatpose_jax.data import input_pipeline
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import evaluator as evaluator_lib

# The CLI test reads the session's trained run `tiny_run` (one xdist worker builds it).
pytestmark = pytest.mark.xdist_group("tiny_run")

LSP = joints_lib.SKELETONS["lsp"]
CROP = input_pipeline.Crop(skeleton=LSP, crop_mode="extent", canvas_hw=(16, 16))
B = 8  # the global batch; the tests' 8 fake CPU devices
SIZES = (1, 3, B - 1, B, B + 1, 2 * B + 1)  # 1 and 3: fewer examples than devices


def _jpeg(seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG")
  return buf.getvalue()


def _source(n: int) -> list[dict]:
  """`n` examples of dataset features (14 LSP joints inside a 24×32 image)."""
  rng = np.random.default_rng(n)
  out = []
  for i in range(n):
    joints = np.stack([rng.uniform(8, 24, 14), rng.uniform(6, 18, 14)], -1).astype(np.float32)
    out.append(
      {
        "image": _jpeg(i),
        "image_hw": np.array([24, 32], np.int32),
        "index": np.int64(i),
        "joints": joints,
        "joints_valid": np.ones(14, bool),
        "joints_visible": np.ones(14, bool),
        "center": np.array([16.0, 12.0], np.float32),
        "scale": np.float32(0.12),
        "head_box": np.zeros(4, np.float32),
        "torso_box": np.array([10, 8, 22, 16], np.float32),
        "head_size": np.float32(6.0),
        "torso_size": np.float32(10.0),
      }
    )
  return out


def _eval_stream(source, batch, **kw):
  kw = {"num_epochs": 1, **kw}
  return input_pipeline.make_dataset(
    source, crop=CROP, global_batch_size=batch, shuffle=False, drop_remainder=False, **kw
  )


@pytest.mark.parametrize("batch", [1, 2, B, 2 * B])
def test_eval_stream_has_every_example_once_for_any_size(batch):
  for n in SIZES:
    source = _source(n)
    for hosts in (1, 2) if batch % 2 == 0 else (1,):
      seen, pads, count = [], 0, 0
      for p in range(hosts):
        for b in _eval_stream(source, batch, process_index=p, process_count=hosts):
          count += 1
          assert b["_mask"].shape == (batch // hosts,) and b["image"].shape[0] == batch // hosts
          seen += b["index"][b["_mask"]].tolist()
          pads += int((~b["_mask"]).sum())
          # Padding rows never count: no valid joint.
          assert not b["joints_valid"][~b["_mask"]].any()
      assert sorted(seen) == list(range(n)), (n, batch, hosts)
      assert count == hosts * -(-n // batch) and pads == -n % batch, (n, batch, hosts)


def test_an_empty_source_is_one_clear_error():
  with pytest.raises(ValueError, match="the source has no examples"):
    _eval_stream([], B)
  with pytest.raises(ValueError, match="num_epochs=0"):
    _eval_stream(_source(1), B, num_epochs=0)


def _fake_predict_fn(mesh):
  """`make_predict_fn`'s contract without a model: predicts the label itself (+ 0.25 px)."""

  def fn(params, batch):
    del params
    out = {k: v for k, v in batch.items() if k != "image"}
    out["coarse"] = out["cascade"] = batch["joints"] + 0.25
    out["scores"] = jax.numpy.ones(batch["joints_valid"].shape)
    return out

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(fn, out_shardings=replicated)


def test_evaluator_scores_every_example_once_on_8_devices():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == B
  fn = _fake_predict_fn(mesh)
  for n in SIZES:
    source = _source(n)
    ev = evaluator_lib.Evaluator(
      fn, lambda source=source: _eval_stream(source, B), mesh, LSP,
      normalizer="torso_size", thresholds=(0.2,), curve_max=0.5, num_examples=n,
    )  # fmt: skip
    scalars = dict(ev.run(None))
    assert ev.result["num_examples"] == n
    assert sorted(ev.preds["index"].tolist()) == list(range(n))
    # Every real example's own labels came back (nothing from a padding row).
    want = np.stack([CROP(ex)["joints"] for ex in source])
    np.testing.assert_allclose(ev.preds["joints"][np.argsort(ev.preds["index"])], want)
    assert scalars["cascade/PCK@0.2/Total"] == 100.0


def test_predictor_returns_one_result_per_image_in_order(tiny_run):
  p = Predictor.from_workdir(str(tiny_run), batch_size=4)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (40 + 3 * i, 48, 3), dtype=np.uint8) for i in range(9)]
  alone = [p(im) for im in images[:5]]
  for n in (1, 3, 4, 5, 9):  # 1, B - 1, B, B + 1, 2B + 1 with B = 4
    results = p(images[:n])
    assert len(results) == n
    for got, want, im in zip(results, alone, images, strict=False):
      assert got["image_hw"] == im.shape[:2]
      np.testing.assert_allclose(got["joints"], want["joints"], atol=1e-3)


def _one_line_error(r, *needles):
  assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-3000:])
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-3000:]
  for n in needles:
    assert n in last, (n, last)


def test_evaluate_cli_scores_a_split_smaller_than_half_a_batch(tiny_run, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  config = json.loads((work / "config.json").read_text())
  assert config["batch_size"] == B
  config["max_eval_examples"] = 3  # < B / 2 and < the 8 devices: no batch came out before
  (work / "config.json").write_text(json.dumps(config))
  r = run_cli("experiments.evaluate", f"--workdir={work}", "--num_overlays=2", devices=8)
  assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
  assert "3 examples" in r.stdout
  result = json.loads((work / "eval_test" / "results.json").read_text())
  assert result["num_examples"] == 3
  preds = sio.loadmat(work / "eval_test" / "predictions.mat")
  assert 3 in np.shape(next(v for k, v in preds.items() if not k.startswith("__")))
  # One overlay per example asked for, and the same on one sheet (two side by side).
  overlays = sorted(p.name for p in (work / "eval_test").glob("overlay_*.png"))
  assert len(overlays) == 2, overlays
  tile = np.asarray(Image.open(work / "eval_test" / overlays[0]))
  sheet = np.asarray(Image.open(work / "eval_test" / "overlays.png"))
  assert sheet.shape[0] > tile.shape[0] and sheet.shape[1] > 2 * tile.shape[1]


def test_training_stops_before_its_first_step_without_an_eval_example(
  tiny_config, tmp_path, monkeypatch
):
  # A missing split: one line, from the CLI, before anything is written.
  work = tmp_path / "cli"
  data_dir, name = tiny_config().data_dir, tiny_config().tfds_config
  r = run_cli(
    "experiments.train", f"--config={SYNTHETIC_CONFIG}:tiny", f"--workdir={work}",
    f"--config.data_dir={data_dir}", f"--config.tfds_config={name}", "--config.eval_split=nope",
    "--config.phases.coarse.steps=1", "--config.phases.fine.steps=0",
    "--config.phases.joint.steps=0", timeout=120,
  )  # fmt: skip
  _one_line_error(r, "no split 'nope'")
  assert not (work / "config.json").exists() and not list(work.rglob("metrics.jsonl"))

  # A split with nothing to score (as an empty split of a dataset built elsewhere).
  real = from_config.dataset_source
  monkeypatch.setattr(
    from_config,
    "dataset_source",
    lambda config, split: [] if split == config.eval_split else real(config, split),
  )
  work = tmp_path / "api"
  with pytest.raises(ValueError, match=r"config.eval_split='test': no example to evaluate"):
    train.train_and_evaluate(tiny_config(), str(work), mesh=one_device_mesh())
  assert not (work / "config.json").exists()
  assert not [p for p in (work / "checkpoints").glob("*") if p.name.isdigit()]

  # max_eval_examples < 0 selects nothing: a config error, naming the field.
  with pytest.raises(from_config.ConfigError, match="config.max_eval_examples=-1"):
    from_config.check(tiny_config(max_eval_examples=-1))
