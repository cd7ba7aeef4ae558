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

from absl import flags

from experiments import launch
from studies import regularization

FLAGS = flags.FLAGS
launch.define_study_flags(
  "Runs go to WORKDIR/regularization/runs/.",
  max_parallel=3,
  checkpoints_per_run=2,
  checkpoints_help="About this many checkpoints per run.",
)
launch.define_record_flags(
  "regularization.{json,md}, regularization_records/", "The figure (default OUT_DIR)."
)
flags.DEFINE_list("groups", list(regularization.GROUPS), "Variants of this invocation.")
flags.DEFINE_integer(
  "num_train", regularization.DEFAULT_NUM_TRAIN, "Training images kept (0: the whole split)."
)
flags.DEFINE_integer("evals_per_run", regularization.EVALS_PER_RUN, "Evaluations per run (>= 10).")


def main(argv):
  del argv
  launch.setup()
  regularization.run_study(
    launch.config(),
    FLAGS.workdir,
    groups=FLAGS.groups,
    num_train=FLAGS.num_train,
    evals_per_run=FLAGS.evals_per_run,
    **launch.record_args(),
    **launch.study_args("experiments.regularization_study"),
  )


if __name__ == "__main__":
  launch.run_study(main)
