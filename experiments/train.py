"""Trains the cascade's three phases and evaluates it.

  python -m experiments.train --config=heatpose_jax/configs/synthetic.py:tiny --workdir=/tmp/run

Rerun the same command to resume (`--workdir` alone resumes with the run's own
config.json). A resume whose config changes what the saved steps mean is refused
(`--allow_config_change` resumes anyway); the changes are printed and kept in
WORKDIR/config_history.jsonl. One run per workdir: a second one exits at once.
Ctrl-C saves the step under way and exits with status 130 (a second Ctrl-C
exits at once, unsaved); SIGTERM saves and exits 0. Synthetic people are built
on first use. Multi-host (one command per host, or under SLURM): add
--distributed; see README.
"""

import sys

from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics, evaluations and config.json go here.")
flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume even though the config changes what the saved steps mean (model, data, batch "
  "size, passed phase boundaries, learning rates of begun phases); the change is recorded.",
)
flags.mark_flags_as_required(["workdir"])

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def main(argv):
  del argv
  launch.setup()
  config = launch.config(FLAGS.workdir)
  result = train.train_and_evaluate(
    config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change
  )
  if result.get("signal") == "SIGINT":
    print(
      f"interrupted (Ctrl-C): saved step {result['stopped_at']} in {FLAGS.workdir}; "
      "rerun the same command to resume",
      file=sys.stderr,
    )
    sys.exit(EXIT_INTERRUPTED)
  if "stopped_at" in result:
    print(f"stopped at step {result['stopped_at']}: rerun the same command to resume")
  else:
    print(f"done: {FLAGS.workdir} (metrics.jsonl, eval/{result['step']}.json, tensorboard/)")


if __name__ == "__main__":
  launch.run(main)
