"""The regularization study (paper §3.2, Fig. 14): SpatialDropout vs standard dropout
vs none, and the shared-feature vs the standard cascade, on a small training set
trained long enough to over-fit (see studies/regularization.py).

  python -m experiments.regularization_study --config=heatpose_jax/configs/synthetic.py:paper,bf16 \
      --workdir=runs/regularization --out_dir=docs/results --figures_dir=docs/figures \
      [--num_train=300] [--groups=spatial_dropout,no_dropout] [--seeds=0,1,2] \
      [--config.key=value ...]

Runs with a matching record in OUT_DIR/regularization_records/ are reused; the
outputs are rewritten from every matching record. `--notrain` only reports.
"""

import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from experiments import launch
from studies import regularization

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "Runs go to WORKDIR/regularization/runs/.")
flags.DEFINE_string(
  "out_dir", "", "regularization.{json,md}, regularization_records/ (default WORKDIR)."
)
flags.DEFINE_string("figures_dir", "", "The figure (default OUT_DIR).")
flags.DEFINE_list("groups", list(regularization.GROUPS), "Variants of this invocation.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seed indices (seed = config.seed + index).")
flags.DEFINE_integer(
  "num_train", regularization.DEFAULT_NUM_TRAIN, "Training images kept (0: the whole split)."
)
flags.DEFINE_integer("evals_per_run", regularization.EVALS_PER_RUN, "Evaluations per run (>= 10).")
flags.DEFINE_integer(
  "max_parallel", 3, "Training runs at a time (subprocesses); 0: in this process."
)
flags.DEFINE_integer("checkpoints_per_run", 2, "About this many checkpoints per run.")
flags.DEFINE_bool(
  "train", True, "Train missing runs; --notrain only measures finished runs and reports."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  launch.setup()
  config = launch.config()
  regularization.run_study(
    config,
    FLAGS.workdir,
    FLAGS.out_dir or FLAGS.workdir,
    groups=FLAGS.groups,
    seeds=[int(s) for s in FLAGS.seeds],
    num_train=FLAGS.num_train,
    evals_per_run=FLAGS.evals_per_run,
    train=FLAGS.train,
    max_parallel=FLAGS.max_parallel,
    train_args=launch.study_train_args(),
    checkpoints_per_run=FLAGS.checkpoints_per_run,
    figures_dir=FLAGS.figures_dir,
    command="python -m experiments.regularization_study " + shlex.join(sys.argv[1:]),
  )


if __name__ == "__main__":
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  launch.run(main)
