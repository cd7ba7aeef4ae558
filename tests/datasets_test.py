"""Finding built datasets (`heatpose_jax.data.datasets`): the datasets that need no
files are prepared on demand, by `data_source` and by training on a fresh data
dir; the others say which command builds them."""

import logging
import os

import pytest

from conftest import one_device_mesh
from heatpose_jax import train
from heatpose_jax.configs import common, synthetic
from heatpose_jax.data import datasets


def test_data_source_prepares_synthetic_people_on_demand(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  source = datasets.data_source("synthetic", "test", config_name="tiny", data_dir=str(tmp_path))
  assert len(source) == 64 and set(source[0]) >= {"image", "joints", "joints_clean"}
  assert "preparing it now" in caplog.text
  caplog.clear()
  assert (
    len(datasets.data_source("synthetic", "train", config_name="tiny", data_dir=str(tmp_path)))
    == 128
  )
  assert "preparing" not in caplog.text  # built once, then read
  with pytest.raises(ValueError, match="no split 'validation'"):
    datasets.data_source("synthetic", "validation", config_name="tiny", data_dir=str(tmp_path))
  # No config named means the default one (256×256 renders), not the only one built.
  assert datasets.find_prepared("synthetic", "", str(tmp_path)) is None
  with pytest.raises(FileNotFoundError, match="'synthetic' is not built"):
    datasets.data_source("synthetic", "test", data_dir=str(tmp_path), prepare=False)


def _fake_build(root, config):
  os.makedirs(root / "mine" / config / "1.0.0")
  (root / "mine" / config / "1.0.0" / "dataset_info.json").write_text("{}")


def test_a_dataset_without_a_default_config_takes_its_only_build(tmp_path):
  _fake_build(tmp_path, "a")
  found = datasets.find_prepared("mine", "", str(tmp_path))
  assert found == str(tmp_path / "mine" / "a" / "1.0.0")
  _fake_build(tmp_path, "b")
  with pytest.raises(ValueError, match=r"several configs built \(a, b\)"):
    datasets.find_prepared("mine", "", str(tmp_path))


def test_datasets_with_files_name_the_build_command(tmp_path):
  with pytest.raises(
    FileNotFoundError, match=r"'flic' is not built .*data_prep\.build --dataset=flic"
  ):
    datasets.data_source("flic", "test", data_dir=str(tmp_path))
  # A custom synthetic config is not guessed from its name: built explicitly.
  with pytest.raises(FileNotFoundError, match="--config=tiny-num_train7"):
    datasets.data_source("synthetic", "test", config_name="tiny-num_train7", data_dir=str(tmp_path))


def test_training_on_a_fresh_data_dir_prepares_synthetic_itself(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  config = synthetic.get_config("tiny")
  config.data_dir = str(tmp_path / "data")
  common.set_steps(config, 1, 0, 0)
  config.batch_size, config.max_eval_examples = 8, 8
  result = train.train_and_evaluate(config, str(tmp_path / "run"), mesh=one_device_mesh())
  assert "dataset synthetic/tiny is not built" in caplog.text and "preparing it now" in caplog.text
  assert result["step"] == 1 and result["num_examples"] == 8
  assert (tmp_path / "data" / "synthetic" / "tiny").is_dir()
