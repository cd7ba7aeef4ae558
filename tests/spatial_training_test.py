"""The MRF spatial model wired to the cascade (heatpose_jax/mrf/spatial_training.py):
fitting on coarse heat-maps, save/load, the MRF as the selector of the one
prediction path, `config.spatial_model.enabled` in train_and_evaluate, and the
Predictor's person selection by torso box."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import one_device_mesh
from heatpose_jax import Predictor, from_config, predictor, train
from heatpose_jax.core import sharding
from heatpose_jax.data import joints
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.model import inference
from heatpose_jax.mrf import spatial_training
from heatpose_jax.training import checkpoints


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
  """A workdir trained (one coarse step) with the spatial model switched on."""
  # The fine stage keeps its initial weights: all the wiring needs.
  # 8x pooling: the 8x8 maps the shapes below are written for.
  config = tiny_config(
    (1, 0, 0),
    **{"spatial_model.enabled": True, "spatial_model.steps": 2, "model.pool_factor": 8},
  )
  workdir = str(tmp_path_factory.mktemp("work"))
  result = train.train_and_evaluate(config, workdir, mesh=one_device_mesh())
  return config, workdir, result


@pytest.fixture(scope="module")
def loaded(trained):
  config, workdir, _ = trained
  mesh = one_device_mesh()
  params, step = checkpoints.restore_params(workdir, from_config.abstract_params(config, mesh))
  return mesh, from_config.model(config), params, step


def test_train_and_evaluate_fits_saves_and_scores_the_mrf(trained, loaded):
  config, workdir, result = trained
  path = spatial_training.saved_path(workdir)
  assert os.path.exists(path)
  on_disk = json.loads((Path(workdir) / "eval" / "1.json").read_text())
  for m in evaluator_lib.MODEL_KEYS:
    for table in (result[m]["table"], on_disk[m]["table"]):
      assert set(table) == {"0.05", "0.1", "0.2", "0.5"}
      assert all(np.isfinite(v) for cols in table.values() for v in cols.values())
  text = evaluator_lib.format_table(result)
  assert "coarse_mrf" in text and "cascade_mrf" in text and "PCKh@0.5" in text

  # Resumable: the saved MRF of this step is loaded, not refitted.
  mtime = os.path.getmtime(path)
  mesh, model, params, step = loaded
  again = train.fit_spatial_model(config, model, params, mesh, workdir, step)
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
def batch(trained):
  config, workdir, _ = trained
  return next(iter(from_config.eval_batches(config, from_config.eval_source(config, workdir))))


def test_fit_from_cascade_and_select(trained, loaded, batch):
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

  # The one prediction path with the MRF as its selector.
  predict = inference.make_predict_fn(model, mesh, selector=spatial_training.mrf_selector(spec))
  out = jax.device_get(predict(params, sharding.to_global_array(batch, mesh), mrf_params))
  b, j = batch["joints"].shape[:2]
  for k in evaluator_lib.MODEL_KEYS:
    assert out[k].shape == (b, j, 2) and np.isfinite(out[k]).all()
  for k in ("scores", "scores_mrf"):
    assert out[k].shape == (b, j) and np.all((out[k] >= 0) & (out[k] <= 1))
  np.testing.assert_array_equal(out["torso_box"], batch["torso_box"])
  # The fine stage refines the MRF's pick: the result lies in the window around it.
  assert np.abs(out["cascade_mrf"] - out["coarse_mrf"]).max() <= model.fine_codec.size / 2 + 4


def test_predictor_selects_with_a_torso_box(trained):
  _, workdir, _ = trained
  p = Predictor.from_workdir(workdir)
  assert p.mrf is not None
  image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
  plain = p(image)
  picked = p(image, torso_box=(20, 10, 40, 30))
  for r in (plain, picked):
    assert r["joints"].shape == (14, 2) and r["scores"].shape == (14,)
    assert np.isfinite(r["joints"]).all() and np.all((r["scores"] >= 0) & (r["scores"] <= 1))
  with pytest.raises(ValueError, match="torso_box"):
    p(image, torso_box=(40, 10, 20, 30))
  # The image box maps onto the letterboxed canvas (scale 64 / 70, centred).
  _, c2i = inference.letterbox(image, (64, 64))
  box = predictor.image_box_to_canvas((20, 10, 40, 30), c2i)
  corners = np.array([[box[0], box[1], 1.0], [box[2], box[3], 1.0]]) @ c2i.T
  np.testing.assert_allclose(corners.ravel(), [20, 10, 40, 30], atol=1e-4)
