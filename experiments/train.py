"""Trains the cascade's three phases and evaluates it.

  python -m experiments.train --config=heatpose_jax/configs/synthetic.py:tiny --workdir=/tmp/run

Rerun the same command to resume (`--workdir` alone resumes with the run's own
config.json). Synthetic people are built on first use. Multi-host (one command
per host, or under SLURM): add --distributed; see README.
"""

from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics, evaluations and config.json go here.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  launch.setup()
  config = launch.config(FLAGS.workdir)
  result = train.train_and_evaluate(config, FLAGS.workdir)
  if "stopped_at" in result:
    print(f"stopped at step {result['stopped_at']}: rerun the same command to resume")
  else:
    print(f"done: {FLAGS.workdir} (metrics.jsonl, eval/{result['step']}.json, tensorboard/)")


if __name__ == "__main__":
  launch.run(main)
