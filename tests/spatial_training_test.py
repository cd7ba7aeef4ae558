"""The MRF spatial model wired to the cascade (heatpose_jax/spatial_training.py):
fitting on coarse heat-maps, save/load, prediction with person selection, the
`config.spatial_model.enabled` path of train_and_evaluate, and the study."""

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from heatpose_jax import (
  evaluation,
  inference,
  input_pipeline,
  joints,
  mrf_study,
  spatial_training,
  train,
)
from heatpose_jax.configs import synthetic as synthetic_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  import tensorflow_datasets as tfds

  from heatpose_jax import synthetic_dataset as synthetic

  d = tmp_path_factory.mktemp("data")
  cfg = synthetic.custom_config("tiny", distractor_prob=1.0, num_train=32, num_test=16)
  synthetic.Synthetic(data_dir=str(d), config=cfg).download_and_prepare(
    download_config=tfds.download.DownloadConfig()
  )
  return str(d), cfg.name


def _config(data):
  c = synthetic_config.get_config("tiny")
  c.data_dir, c.tfds_config = data
  # One coarse step: the fine stage keeps its initial weights, which is all the
  # wiring needs (the refinement runs either way).
  c.coarse_steps, c.fine_steps, c.joint_steps = 1, 0, 0
  # One example per fake device: unoptimized XLA convolutions are slow.
  c.batch_size = 8
  c.log_every = 1
  c.checkpoint_every = 100
  c.max_eval_examples = 8
  c.spatial_model.enabled = True
  c.spatial_model.steps = 2
  return c


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  """A workdir trained with the spatial model switched on."""
  config = _config(data)
  workdir = str(tmp_path_factory.mktemp("work"))
  result = train.train_and_evaluate(config, workdir)
  return config, workdir, result


@pytest.fixture(scope="module")
def loaded(trained):
  """The trained workdir's mesh, model and parameters."""
  config, workdir, _ = trained
  mesh = Mesh(np.array(jax.devices()), ("data",))
  model, params, step = train.load_params(config, workdir, mesh)
  return mesh, model, params, step


def test_train_and_evaluate_fits_saves_and_scores_the_mrf(trained, loaded):
  config, workdir, result = trained
  path = spatial_training.saved_path(workdir)
  assert os.path.exists(path)
  on_disk = json.loads((Path(workdir) / "eval" / "1.json").read_text())
  for m in evaluation.MODEL_KEYS:
    for table in (result[m]["table"], on_disk[m]["table"]):
      assert set(table) == {"0.05", "0.1", "0.2", "0.5"}
      assert all(np.isfinite(v) for cols in table.values() for v in cols.values())
  text = evaluation.format_results(result)
  assert "coarse_mrf" in text and "cascade_mrf" in text

  # Resumable: the saved MRF of this step is loaded, not refitted.
  mtime = os.path.getmtime(path)
  mesh, model, params, step = loaded
  again = train.fit_or_load_spatial_model(config, model, params, mesh, workdir, step)
  assert os.path.getmtime(path) == mtime
  assert again.info["cascade_step"] == step == 1 and again.info["steps"] == 2
  assert np.isfinite(again.info["final_loss"])


def test_save_load_round_trip(trained, tmp_path):
  _, workdir, _ = trained
  mrf = spatial_training.load(workdir)
  spec = mrf.spec
  assert spec.heatmap_hw == (8, 8) and spec.stride == 8 and spec.num_joints == 14
  assert mrf.params["kernels"].shape == (len(spec.edges), 15, 15)
  spatial_training.save(str(tmp_path), mrf)
  back = spatial_training.load(str(tmp_path))
  assert back.spec == spec and back.info == mrf.info
  for k in ("kernels", "biases"):
    np.testing.assert_array_equal(back.params[k], mrf.params[k])
  assert spatial_training.load(str(tmp_path / "nothing")) is None
  # A fitted MRF differs from its pass-through initialization.
  assert not np.allclose(mrf.params["biases"], -5.0)


@pytest.fixture(scope="module")
def batch(data):
  config = _config(data)
  source = train.data_source(config, "test")
  it = iter(train.eval_batches(config, source))
  return next(it)


def test_fit_from_cascade_and_predict(trained, loaded, batch):
  config, _, _ = trained
  mesh, model, params, _ = loaded
  skeleton = joints.get_skeleton(config.dataset)
  losses = []
  mrf_params = spatial_training.fit_from_cascade(
    model,
    params,
    [batch] * 3,
    skeleton=skeleton,
    stride=8,
    heatmap_hw=(8, 8),
    steps=3,
    learning_rate=0.05,
    mesh=mesh,
    log_every=1,
    log_fn=lambda i, v: losses.append(v),
  )
  assert len(losses) == 3 and all(np.isfinite(losses))
  assert losses[-1] < losses[0]  # the same batch three times: the loss goes down
  spec = spatial_training.MRFSpec.for_skeleton(skeleton, stride=8, heatmap_hw=(8, 8))
  assert jax.tree.map(np.shape, mrf_params) == {
    "kernels": (len(spec.edges), 15, 15),
    "biases": (len(spec.edges),),
  }

  # The evaluation's predict function (the same compiled one train_and_evaluate used).
  predict = spatial_training.make_mrf_predict_fn(model, mesh, spec)
  out = jax.device_get(predict(params, mrf_params, input_pipeline.to_global_array(batch, mesh)))
  b, j = batch["joints"].shape[:2]
  for k in evaluation.MODEL_KEYS:
    assert out[k].shape == (b, j, 2) and np.isfinite(out[k]).all()
  np.testing.assert_array_equal(out["torso_box"], batch["torso_box"])
  # The fine stage refines the MRF's pick: the result lies in the window around it.
  assert np.abs(out["cascade_mrf"] - out["coarse_mrf"]).max() <= model.context / 2 + 4


def test_photo_predictor_with_torso_box(trained, loaded):
  config, workdir, _ = trained
  _, model, params, _ = loaded
  mrf = spatial_training.load(workdir)
  hw = tuple(config.input_hw)
  fn = spatial_training.make_photo_predictor(model, mrf.spec, hw)
  image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
  xy, score = spatial_training.predict_image(
    fn, params, mrf.params, image, hw, torso_box=(20, 10, 40, 30)
  )
  assert xy.shape == (14, 2) and score.shape == (14,)
  assert np.isfinite(xy).all() and np.isfinite(score).all()
  # The image box maps onto the letterboxed canvas (scale 64 / 70, centred).
  _, c2i = inference.letterbox(image, hw)
  box = spatial_training.image_box_to_canvas((20, 10, 40, 30), c2i)
  corners = np.array([[box[0], box[1], 1.0], [box[2], box[3], 1.0]]) @ c2i.T
  np.testing.assert_allclose(corners.ravel(), [20, 10, 40, 30], atol=1e-4)


def test_study_writes_finite_table(trained, tmp_path):
  # `experiments/mrf_study.py` is a thin launcher of `run_study`; in-process, the
  # compiled functions of the other tests are reused (a subprocess takes ~1 min).
  config, workdir, _ = trained
  work = tmp_path / "work"
  shutil.copytree(workdir, work)
  mrf_study.run_study(config, str(work), train_first=False, num_overlays=2)
  out = work / "mrf_study"
  summary = json.loads((out / "table.json").read_text())
  assert set(summary["views"]) == {"person", "image"}
  for view in summary["views"].values():
    assert view["num_with_distractor"] == 8 and view["num_joints"] > 0
    assert set(view["rows"]) == {"coarse", "cascade", "coarse_mrf", "cascade_mrf"}
    for row in view["rows"].values():
      assert 0 <= row["right_person"] <= 100 and 0 <= row["on_distractor"] <= 100
      assert all(np.isfinite(v) for v in row["pck"].values())
  md = (out / "table.md").read_text()
  assert "cascade+MRF" in md and "right person" in md
  for name in ("figure.png", "overlays.png", "image_view/spatial_model/mrf.npz"):
    assert (out / name).stat().st_size > 0
