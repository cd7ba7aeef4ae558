"""The paper's experiments (§5): trains the runs they need (reusing finished ones),
evaluates, and writes each experiment's figures and table into WORKDIR/NAME/.

  python -m experiments.paper --experiment=all \
      --config=heatpose_jax/configs/synthetic.py --workdir=runs/paper \
      [--seeds=3] [--max_parallel=2] [--config.data_dir=...]

Experiments: pooling, cascade, shared_features, spatial_dropout, timing,
mpii_table (see studies/paper.py), or all. Every `--config.key=value` argument
is applied here and passed on to every training run.
"""

import os
import re
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import launch
from studies import paper

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "Runs go to WORKDIR/runs/, experiment NAME to WORKDIR/NAME/.")
flags.DEFINE_list("experiment", ["all"], f"Comma-separated, from {paper.EXPERIMENTS} or 'all'.")
flags.DEFINE_list("pools", ["4", "8", "16"], "Pooling factors of pooling, cascade and timing.")
flags.DEFINE_integer("seeds", 1, "Runs per configuration; tables report mean ± std.")
flags.DEFINE_integer(
  "max_parallel", 1, "Training runs at a time (one subprocess each); 0: in this process."
)
flags.DEFINE_integer("checkpoints_per_run", 10, "About this many checkpoints per run, all kept.")
flags.DEFINE_integer("timing_iters", 50, "Timed calls per forward-time measurement.")
flags.DEFINE_list("timing_batch_sizes", ["1", "32"], "Batch sizes of the timing experiment.")
flags.mark_flags_as_required(["config", "workdir"])


def _train_args() -> list[str]:
  """`experiments.train` arguments shared by every run: the config file (absolute:
  the children run in the repository), the `--config.*` overrides of this command
  line, and its compilation cache (runs that share a train step compile it once)."""
  overrides = [a for a in sys.argv[1:] if re.match(r"^--?config\.", a)]
  bad = [a for a in overrides if "=" not in a]
  if bad:
    raise app.UsageError(f"write config overrides as --config.key=value: {bad}")
  head, _, tail = FLAGS["config"].config_filename.partition(":")
  config_arg = (os.path.abspath(head) if os.path.exists(head) else head) + (
    f":{tail}" if tail else ""
  )
  cache = os.path.abspath(FLAGS.compilation_cache_dir) if FLAGS.compilation_cache_dir else ""
  return [f"--config={config_arg}", *overrides, f"--compilation_cache_dir={cache}"]


def main(argv):
  del argv
  launch.setup()
  config = launch.config()
  paper.run_experiments(
    config,
    FLAGS.workdir,
    FLAGS.experiment,
    pools=[int(p) for p in FLAGS.pools],
    seeds=FLAGS.seeds,
    max_parallel=FLAGS.max_parallel,
    train_args=_train_args(),
    checkpoints_per_run=FLAGS.checkpoints_per_run,
    timing_iters=FLAGS.timing_iters,
    timing_batch_sizes=[int(b) for b in FLAGS.timing_batch_sizes],
    command="python -m experiments.paper " + shlex.join(sys.argv[1:]),
  )
  print(f"tables and figures in {FLAGS.workdir}/<experiment>/, summary: {FLAGS.workdir}/summary.md")


if __name__ == "__main__":
  # Training subprocesses share the accelerator: this process allocates on demand.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  launch.run(main)
