"""A contact sheet of a built dataset's examples with their skeletons: what the
model is trained on, optionally after the device augmentation.

  python -m experiments.browse_dataset --dataset=synthetic --split=train --augment \
      --output=sheet.png [--tfds_config=small] [--data_dir=DIR] [--num=24]
  python -m experiments.browse_dataset --dataset_module=my_datasets --dataset=mine ...

Each tile is the person-centred canvas the input pipeline crops (the dataset's
config, `heatpose_jax/configs/NAME.py`, or for a dataset without one the config
made from its spec, `configs/registered.py`; or --config), with the annotated
joints in green (left side lighter; joints outside the canvas or not annotated
are not drawn). --dataset is any registered dataset (`dataset_specs.SPECS`);
--dataset_module imports a module first that registers more.
"""

import importlib
import importlib.util

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import from_config
from heatpose_jax.configs import registered
from heatpose_jax.core import fileio, outputs
from heatpose_jax.data import dataset_specs
from heatpose_jax.evaluation import visualize

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A training config, with :args (crop, input size).")
# A string checked against the registry once --dataset_module has registered its datasets.
flags.DEFINE_string(
  "dataset", None, f"The dataset: {', '.join(dataset_specs.SPECS)}, or one --dataset_module adds."
)
flags.DEFINE_string(
  "dataset_module", None, "Module(s) to import first (comma-separated) that register datasets."
)
flags.DEFINE_string("tfds_config", None, "Builder config (default: the dataset config's).")
flags.DEFINE_string(
  "data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
flags.DEFINE_string("split", "train", "Split to show.")
flags.DEFINE_bool("augment", False, "Show the examples after the device augmentation.")
flags.DEFINE_integer("num", 24, "Examples on the sheet.")
flags.DEFINE_integer("columns", 6, "Tiles per row.")
flags.DEFINE_integer(
  "seed", 0, "Which examples (shuffled by this seed; 0 = the first ones) and augmentation."
)
flags.DEFINE_string("output", None, "The PNG to write.")
flags.mark_flags_as_required(["output"])


def dataset_config(name: str, module: str):
  """The config of dataset `name`: its own (`heatpose_jax/configs/NAME.py`) where the
  project has one, else the one made from its spec (`configs/registered.py`)."""
  if name not in dataset_specs.SPECS:
    raise ValueError(
      f"--dataset={name}: unknown; known: {sorted(dataset_specs.SPECS)} "
      "(or --dataset_module=MODULE that registers it)"
    )
  if importlib.util.find_spec(f"heatpose_jax.configs.{name}") is not None:
    return importlib.import_module(f"heatpose_jax.configs.{name}").get_config()
  config = registered.get_config(f"name={name}")
  config.dataset_module = module
  return config


def main(argv):
  del argv
  # A sheet this command wrote before is replaced; any other file is left alone.
  outputs.prepare_file(FLAGS.output, "--output")
  outputs.check([(FLAGS.output, outputs.image_is_ours)], way_out="choose another --output")
  launch.setup()
  dataset_specs.import_modules(FLAGS.dataset_module)
  if "config" in FLAGS and FLAGS["config"].present:
    config = launch.config()
  elif FLAGS.dataset:
    config = dataset_config(FLAGS.dataset, FLAGS.dataset_module or "")
  else:
    raise ValueError("give --dataset (or --config)")
  if FLAGS.tfds_config is not None:
    config.tfds_config = FLAGS.tfds_config
  if FLAGS.data_dir:
    config.data_dir = FLAGS.data_dir
  if FLAGS.num < 1:
    raise ValueError(f"--num={FLAGS.num}: must be >= 1")
  source = from_config.dataset_source(config, FLAGS.split)
  n = min(FLAGS.num, len(source))
  rng = np.random.default_rng(FLAGS.seed)
  order = np.arange(len(source)) if FLAGS.seed == 0 else rng.permutation(len(source))
  crop = from_config.crop(config, training=True)
  examples = [crop(source[int(i)]) for i in order[:n]]
  batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
  if FLAGS.augment:
    batch = jax.device_get(
      jax.jit(from_config.augmentation(config))(jax.random.key(FLAGS.seed), batch)
    )
  skeleton = from_config.skeleton(config)
  tiles = [
    visualize.draw(
      np.clip(np.round(batch["image"][k]), 0, 255).astype(np.uint8),
      None,
      skeleton,
      gt=batch["joints"][k],
      gt_valid=batch["joints_valid"][k],
      min_side=192,
      legend=False,
      title=f"#{int(batch['index'][k])}",
    )
    for k in range(n)
  ]
  fileio.save_image(FLAGS.output, visualize.contact_sheet(tiles, FLAGS.columns))
  label = config.tfds_name + (f"/{config.tfds_config}" if config.tfds_config else "")
  print(
    f"{n} examples of {label} {FLAGS.split}{' (augmented)' if FLAGS.augment else ''} -> {FLAGS.output}"
  )


if __name__ == "__main__":
  launch.run(main)
