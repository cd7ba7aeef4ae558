"""The dataset extension point (`heatpose_jax.data.dataset_specs`): a dataset defined
and registered here, outside the library, is built, read, cropped, scored and
found by a command through the registry, with no library file edited.

This module is also the `--dataset_module` of the command it runs: importing it
registers the toy dataset (5 joints, its own flip pairs and table). It imports
only what the builder needs at the top (the command stays quick to start).
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from heatpose_jax.data import dataset_specs, features
from heatpose_jax.data import joints as joints_lib

ROOT = Path(__file__).resolve().parents[1]
_NAMES = ("head", "l_hand", "r_hand", "l_foot", "r_foot")
# Where each joint sits on a 32×32 image, (x, y) 0-based (jittered per example).
_LAYOUT = np.array([[16, 6], [8, 14], [24, 14], [12, 27], [20, 27]], np.float32)
TOY_SKELETON = joints_lib.Skeleton(
  name="toy",
  annotated=_NAMES,
  model_joints=_NAMES,
  flip_pairs=(("l_hand", "r_hand"), ("l_foot", "r_foot")),
  torso=("r_hand", "l_foot"),
  scored=_NAMES,
  table=(("Head", ("head",)), ("Hand", ("l_hand", "r_hand")), ("Foot", ("l_foot", "r_foot"))),
  limbs=(("head", "l_hand"), ("head", "r_hand"), ("head", "l_foot"), ("head", "r_foot")),
)
TRAIN, TEST = 8, 4


def toy_example(split: str, index: int) -> dict:
  """Example `index` of `split`: a 32×32 PNG and its 5 joints (the common features)."""
  rng = np.random.default_rng([TRAIN if split == "train" else TEST, index])
  joints = _LAYOUT + rng.uniform(-1.5, 1.5, _LAYOUT.shape).astype(np.float32)
  pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  valid = np.ones(5, bool)
  center, scale = features.extent_center_scale(joints, valid)
  head = joints[0]
  head_box = np.concatenate([head - 4, head + 4]).astype(np.float32)
  return {
    "image": buf.getvalue(),
    "image_hw": np.array([32, 32], np.int32),
    "index": np.int64(index),
    "joints": joints,
    "joints_valid": valid,
    "joints_visible": valid,
    "center": center,
    "scale": scale,
    "head_box": head_box,
    "torso_box": np.concatenate([joints[1:].min(0), joints[1:].max(0)]).astype(np.float32),
    "head_size": np.float32(0.6 * np.hypot(8, 8)),
    "torso_size": np.float32(np.linalg.norm(joints[2] - joints[3])),
  }


class Toy(features.ArrayRecordBuilder, skip_registration=True):
  """5 joints on noise: rendered from (split, index), no files (generated)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return features.dataset_info(
      self, features=features.common_features(5), metadata=features.spec_metadata(TOY)
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      "train": self._generate_examples("train", TRAIN),
      "test": self._generate_examples("test", TEST),
    }

  def _generate_examples(self, split, num):
    for i in range(num):
      yield i, toy_example(split, i)


# The one line a user's module needs (besides the spec): the registration.
TOY = dataset_specs.register(
  dataset_specs.DatasetSpec(
    skeleton=TOY_SKELETON,
    tfds_name="toy",
    builder=Toy,
    generated=True,
    normalizer="head_size",
    # Explicit pools: a 3-column table keeps them (no guess from the table's length).
    pools=(("Limbs", _NAMES[1:]), ("Total", _NAMES)),
  )
)


def test_library_specs_agree_with_their_builders():
  for name, spec in dataset_specs.SPECS.items():
    cls = spec.builder_class()
    assert name == spec.name and cls.name == spec.tfds_name
    assert tuple(c.name for c in cls.BUILDER_CONFIGS) == spec.configs
    default = getattr(cls, "DEFAULT_BUILDER_CONFIG_NAME", None) or (spec.configs or [""])[0]
    assert default == spec.default_config
    assert bool(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)) == spec.manual
  # The tables as before: FLIC's without pooled columns, the others with UBody and Total.
  assert dataset_specs.FLIC.pools == ()
  for spec in (dataset_specs.MPII, dataset_specs.LSP, dataset_specs.SYNTHETIC):
    assert [c for c, _ in spec.pools] == ["UBody", "Total"]


def test_register_refuses_another_spec_under_a_taken_name():
  assert dataset_specs.register(TOY) is TOY  # the same spec again: a no-op
  other = dataset_specs.DatasetSpec(skeleton=TOY_SKELETON, tfds_name="toy2", builder=Toy)
  with pytest.raises(ValueError, match="'toy' is registered already"):
    dataset_specs.register(other)
  with pytest.raises(ValueError, match="pool 'X'"):
    dataset_specs.DatasetSpec(
      skeleton=TOY_SKELETON, tfds_name="toy", builder=Toy, pools=(("X", ("nose",)),)
    )
  with pytest.raises(ValueError, match="--dataset_module=no_such_module: cannot import"):
    dataset_specs.import_modules("no_such_module")


def test_a_registered_dataset_is_prepared_read_cropped_and_described_by_its_build(tmp_path):
  from heatpose_jax import from_config
  from heatpose_jax.configs import registered
  from heatpose_jax.data import datasets

  config = registered.get_config("name=toy,tiny")
  config.data_dir = str(tmp_path)
  from_config.check(config)
  assert from_config.skeleton(config) is TOY_SKELETON
  source = from_config.dataset_source(config, "train")  # generated: prepared on demand
  assert len(source) == TRAIN and source[3]["joints"].shape == (5, 2)
  ex = from_config.crop(config)(source[3])
  assert ex["image"].shape == (64, 64, 3) and ex["joints"].shape == (5, 2)
  assert from_config.augmentation(config).flip_perm == (0, 2, 1, 4, 3)
  # The build stored its spec: a process that imports no module finds it there.
  meta = json.loads(next(tmp_path.glob("toy/*/metadata.json")).read_text())
  assert meta[dataset_specs.METADATA_KEY]["skeleton"]["flip_pairs"][0] == ["l_hand", "r_hand"]
  del dataset_specs.SPECS["toy"]
  try:
    assert datasets.find_spec("toy", data_dir="/nonexistent") is None
    found = datasets.find_spec("toy", data_dir=str(tmp_path))
    assert found.skeleton == TOY_SKELETON and found.pools == TOY.pools
    assert found.builder.endswith(":Toy")
  finally:
    dataset_specs.register(TOY, replace=True)


def test_tables_pool_the_columns_the_spec_names():
  from heatpose_jax.evaluation import evaluator as evaluator_lib

  rng = np.random.default_rng(0)
  n = 6
  gt = np.tile(_LAYOUT, (n, 1, 1))
  near = gt + rng.normal(0, 0.5, gt.shape)
  preds = {
    "joints": gt,
    "joints_valid": np.ones((n, 5), np.float32),
    "head_size": np.full(n, 6.0),
    "coarse": near + 20.0,  # every joint wrong
    "cascade": near,
  }
  result = evaluator_lib.score(
    preds, TOY_SKELETON, normalizer="head_size", thresholds=(0.5,), curve_max=0.5
  )
  table = result["cascade"]["table"]["0.5"]
  assert list(table) == ["Head", "Hand", "Foot", "Limbs", "Total"]
  assert table["Total"] == 100.0 and result["coarse"]["table"]["0.5"]["Limbs"] == 0.0
  assert "Limbs" in result["cascade"]["curve"]
  assert "Total" in evaluator_lib.format_table(result).splitlines()[1]


def test_the_build_command_finds_a_dataset_its_module_registers(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "data_prep.build", "--dataset=toy", f"--data_dir={tmp_path}"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --dataset=toy: unknown; known: [") and "--dataset_module" in last
  out = subprocess.run(
    [*cmd, "--dataset_module=tests.dataset_spec_test"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"toy/1.0.0 written to {tmp_path}/toy/1.0.0" in out.stdout
  assert "  train: 8 examples" in out.stdout and "  test: 4 examples" in out.stdout
