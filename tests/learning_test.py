"""The model learns: the quick start's tiny cascade memorizes a handful of images.

Before the fix of docs/training.md ("Why learning stalled"), the coarse model settled
on the mean heat-map of the training set whatever the image (E1 ≈ the mean map's
loss) and every figure got the same skeleton; a model that can fit 16 images
to PCKh@0.5 ≥ 95 through the public training entry point cannot be stuck there.
"""

import jax
import numpy as np
import pytest

from conftest import one_device_mesh
from heatpose_jax import from_config, train
from heatpose_jax.configs import common, synthetic
from heatpose_jax.data import synthetic_dataset
from heatpose_jax.model import models


@pytest.fixture(scope="module")
def sixteen_images(tmp_path_factory):
  d = tmp_path_factory.mktemp("sixteen")
  builder = synthetic_dataset.prepare("tiny", str(d), num_train=16, num_test=8)
  return str(d), builder.builder_config.name


def _overfit_config(data, **overrides):
  c = synthetic.get_config("tiny")
  c.data_dir, c.tfds_config = data
  c.eval_split = "train"  # score the very images it trained on
  c.batch_size = 8  # two steps an epoch
  common.set_steps(c, 100, 60, 0)
  c.augment.rotation, c.augment.scale, c.augment.flip = 0.0, (1.0, 1.0), 0.0
  c.model.dropout = "none"
  c.log_every = 50
  c.checkpoint_every = 1000
  return from_config.with_overrides(c, overrides)


def test_the_tiny_cascade_memorizes_sixteen_images(sixteen_images, tmp_path):
  result = train.train_and_evaluate(
    _overfit_config(sixteen_images), str(tmp_path), mesh=one_device_mesh()
  )
  assert result["num_examples"] == 16
  coarse = result["coarse"]["table"]["0.5"]["Total"]  # percent
  cascade = result["cascade"]["table"]["0.5"]["Total"]
  assert coarse >= 80, result["coarse"]["table"]["0.5"]
  assert cascade >= 95, result["cascade"]["table"]["0.5"]


def test_activations_keep_their_scale_through_the_coarse_bank():
  """He-initialized ReLU convs: the bank's last conv is within 4× of its first
  (Flax's default LeCun init shrank it ~25× through the 8-conv MPII bank)."""
  net = models.make_model(num_joints=14, variant="mpii", width=1 / 8, head_features=(32, 32))
  x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), maxval=255.0)

  @jax.jit
  def intermediates(x):
    params = net.init(jax.random.key(1, impl="rbg"), x, train=False)
    _, inter = net.apply(
      params,
      x,
      train=False,
      method="coarse_heatmaps",
      capture_intermediates=True,
      mutable=["intermediates"],
    )
    return inter["intermediates"]["coarse"]

  bank = intermediates(x)
  first = float(np.std(bank["bank0_conv0"]["__call__"][0]))
  last = float(np.std(bank["bank0_conv7"]["__call__"][0]))
  assert last > first / 4, (first, last)
