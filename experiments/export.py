"""Serializes a trained run's predictor with `jax.export` (StableHLO, parameters included).

  python -m experiments.export --workdir=W --output=predictor.jax [--platforms=cpu,cuda]

The exported function maps uint8 canvases (B, H, W, 3) at the config's input size
(any B) to {"joints": (B, J, 2) float32 canvas (x, y), "scores": (B, J)}. Serve it
from any JAX process without this code:

    exported = jax.export.deserialize(open("predictor.jax", "rb").read())
    out = exported.call(canvases)

(README, "Serving").
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import fileio, predictor

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest usable one).")
flags.DEFINE_string(
  "output", None, "The serialized predictor (a .json of its signature goes beside)."
)
flags.DEFINE_list("platforms", None, "Platforms to lower for (cpu, cuda, tpu); default: this one.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
  del argv
  launch.setup()
  config = launch.config(FLAGS.workdir)
  pred = predictor.Predictor.from_workdir(FLAGS.workdir, step=FLAGS.step, config=config)
  exported = pred.export(platforms=FLAGS.platforms)
  with fileio.atomic_open(FLAGS.output, "wb") as f:
    f.write(exported.serialize())
  signature = {
    "input": {"shape": ["B", *pred.input_hw, 3], "dtype": "uint8", "frame": "letterboxed canvas"},
    "outputs": {
      "joints": {"shape": ["B", len(pred.names), 2], "dtype": "float32", "frame": "canvas (x, y)"},
      "scores": {"shape": ["B", len(pred.names)], "dtype": "float32", "range": [0, 1]},
    },
    "names": list(pred.names),
    "checkpoint_step": pred.step,
    "platforms": list(exported.platforms),
  }
  fileio.write_json(os.path.splitext(FLAGS.output)[0] + ".json", signature)
  size = os.path.getsize(FLAGS.output) / 2**20
  print(f"{FLAGS.output}: {size:.1f} MiB, platforms {list(exported.platforms)}")
  print(json.dumps(signature["outputs"]))


if __name__ == "__main__":
  launch.run(main)
