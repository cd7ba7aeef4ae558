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
from heatpose_jax import predictor
from heatpose_jax.core import fileio, outputs

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

# The keys that make a JSON this command's signature (`outputs.json_with`).
SIGNATURE_KEYS = ("input", "outputs", "names", "checkpoint_step")


def signature_path(output: str) -> str:
  return os.path.splitext(output)[0] + ".json"


def check_outputs(output: str, workdir: str) -> None:
  """Refuses, before any work, an output that would replace a file export did not write."""
  outputs.prepare_file(output, "--output")
  signature = signature_path(output)
  if outputs.same_file(output, signature) or output == signature:
    raise outputs.OutputError(
      f"--output={output}: its signature {signature} would be the same file; "
      "name the output e.g. predictor.jax"
    )
  ours = outputs.json_with(SIGNATURE_KEYS)
  outputs.check(
    [(output, outputs.companion(signature, ours)), (signature, ours)],
    inputs=[os.path.join(workdir, "config.json")],
    way_out="choose another --output",
  )


def main(argv):
  del argv
  check_outputs(FLAGS.output, FLAGS.workdir)
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
    "exported": os.path.basename(FLAGS.output),
  }
  fileio.write_json(signature_path(FLAGS.output), signature)
  size = os.path.getsize(FLAGS.output) / 2**20
  print(f"{FLAGS.output}: {size:.1f} MiB, platforms {list(exported.platforms)}")
  print(json.dumps(signature["outputs"]))


if __name__ == "__main__":
  launch.run(main)
