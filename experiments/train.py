"""Trains the cascade's three phases and evaluates it.

  python -m experiments.train --config=heatpose_jax/configs/synthetic.py:tiny --workdir=/tmp/run

Multi-host (one command per host, or under SLURM): add --distributed; see README.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, logs and results go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  launch.setup()
  result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("done: %s", {k: v for k, v in result.items() if k in ("step", "stopped_at")})


if __name__ == "__main__":
  app.run(main)
