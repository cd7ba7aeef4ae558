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
from heatpose_jax.training import checkpoints


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


@pytest.fixture(scope="module")
def memorized(sixteen_images, tmp_path_factory):
  """The overfit run: (config, workdir, train_and_evaluate's result)."""
  config, workdir = _overfit_config(sixteen_images), str(tmp_path_factory.mktemp("memorized"))
  return config, workdir, train.train_and_evaluate(config, workdir, mesh=one_device_mesh())


def test_the_tiny_cascade_memorizes_sixteen_images(memorized):
  _, _, result = memorized
  assert result["num_examples"] == 16
  coarse = result["coarse"]["table"]["0.5"]["Total"]  # percent
  cascade = result["cascade"]["table"]["0.5"]["Total"]
  assert coarse >= 80, result["coarse"]["table"]["0.5"]
  assert cascade >= 95, result["cascade"]["table"]["0.5"]


def test_every_head_unit_still_fires_after_training(memorized):
  """The quick start's head (`model.head_norm`): without GroupNorm after its 1x1
  convs, 4 of the first head layer's 32 units had died in these 160 steps (never
  above zero on any training image again; a third to a half of them by the end
  of a quick start), and a left/right pair could lose what tells its sides apart
  (docs/training.md, "Eleventh round")."""
  config, workdir, _ = memorized
  assert config.model.head_norm
  mesh = one_device_mesh()
  model = from_config.model(config)
  params, _ = checkpoints.restore_params(workdir, from_config.abstract_params(config, mesh))
  names = {f"head_norm{i}" for i in range(len(config.model.head_features))}

  @jax.jit
  def head_pre_activations(params, images):
    _, inter = model.apply(
      {"params": params},
      images,
      train=False,
      method="coarse_heatmaps",
      capture_intermediates=lambda m, _: m.name in names,
      mutable=["intermediates"],
    )
    return {k: v["__call__"][0] for k, v in inter["intermediates"]["coarse"].items()}

  fired = {}
  for batch in from_config.eval_batches(config, from_config.eval_source(config, workdir, "train")):
    real = np.asarray(batch["_mask"], bool)  # not the padding rows
    for name, x in head_pre_activations(params, batch["image"]).items():
      seen = np.asarray(x > 0)[real].reshape(-1, x.shape[-1]).any(0)
      fired[name] = fired.get(name, False) | seen
  assert set(fired) == names
  for name, units in fired.items():
    assert units.all(), f"{name}: units {np.flatnonzero(~units).tolist()} never fire"


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
