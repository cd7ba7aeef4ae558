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
import shlex
import sys

from absl import flags
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
    train_args=launch.study_train_args(),
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
