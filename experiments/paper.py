"""The paper's experiments (§5): trains the runs they need (reusing finished ones),
evaluates, and writes each experiment's figures and table into WORKDIR/NAME/.

  python -m experiments.paper --experiment=all \
      --config=heatpose_jax/configs/synthetic.py --workdir=runs/paper \
      [--seeds=3] [--max_parallel=2] [--config.data_dir=...]

Experiments: pooling, cascade, shared_features, spatial_dropout, timing,
mpii_table (see studies/paper.py), or all. Every `--config.key=value` argument
is applied here and passed on to every training run.
"""

from absl import flags

from experiments import launch
from studies import paper

FLAGS = flags.FLAGS
launch.define_study_flags(
  "Runs go to WORKDIR/runs/, experiment NAME to WORKDIR/NAME/.",
  max_parallel=1,
  checkpoints_per_run=10,
  checkpoints_help="About this many checkpoints per run, all kept.",
)
flags.DEFINE_list("experiment", ["all"], f"Comma-separated, from {paper.EXPERIMENTS} or 'all'.")
flags.DEFINE_list("pools", ["4", "8", "16"], "Pooling factors of pooling, cascade and timing.")
flags.DEFINE_integer("seeds", 1, "Runs per configuration; tables report mean ± std.")
flags.DEFINE_integer("timing_iters", 50, "Timed calls per forward-time measurement.")
flags.DEFINE_list("timing_batch_sizes", ["1", "32"], "Batch sizes of the timing experiment.")


def main(argv):
  del argv
  launch.setup()
  paper.run_experiments(
    launch.config(),
    FLAGS.workdir,
    FLAGS.experiment,
    pools=[int(p) for p in FLAGS.pools],
    seeds=FLAGS.seeds,
    timing_iters=FLAGS.timing_iters,
    timing_batch_sizes=[int(b) for b in FLAGS.timing_batch_sizes],
    **launch.study_args("experiments.paper"),
  )
  print(f"tables and figures in {FLAGS.workdir}/<experiment>/, summary: {FLAGS.workdir}/summary.md")


if __name__ == "__main__":
  launch.run_study(main)
