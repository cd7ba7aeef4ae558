"""The paper's experiments (§5): trains the runs they need (reusing finished ones),
evaluates, and writes each experiment's figures and table into WORKDIR/NAME/.

  python -m experiments.paper --experiment=all \
      --config=heatpose_jax/configs/synthetic.py --workdir=runs/paper \
      [--seeds=3] [--max_parallel=2] [--config.data_dir=...]

Experiments: pooling, cascade, shared_features, spatial_dropout, timing,
mpii_table (see heatpose_jax/paper.py), or all. Every `--config.key=value`
argument is applied here and passed on to every training run.
"""

import os
import re
import shlex
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from heatpose_jax import paper

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "Runs go to WORKDIR/runs/, experiment NAME to WORKDIR/NAME/.")
flags.DEFINE_list("experiment", ["all"], f"Comma-separated, from {paper.EXPERIMENTS} or 'all'.")
flags.DEFINE_integer("seeds", 1, "Runs per configuration; tables report mean ± std.")
flags.DEFINE_integer("max_parallel", 1, "Training runs at a time (one subprocess each).")
flags.DEFINE_integer("checkpoints_per_run", 10, "About this many checkpoints per run, all kept.")
flags.DEFINE_integer("timing_iters", 50, "Timed calls per forward-time measurement.")
flags.DEFINE_list("timing_batch_sizes", ["1", "32"], "Batch sizes of the timing experiment.")
flags.DEFINE_bool(
  "compilation_cache", True, "Share compiled train steps between runs (WORKDIR/jax_cache)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  overrides = [a for a in sys.argv[1:] if re.match(r"^--?config\.", a)]
  bad = [a for a in overrides if "=" not in a]
  if bad:
    raise app.UsageError(f"write config overrides as --config.key=value: {bad}")
  cache = ""
  if FLAGS.compilation_cache:
    cache = os.path.join(FLAGS.workdir, "jax_cache")
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
  paper.run_experiments(
    FLAGS.config,
    FLAGS.workdir,
    FLAGS.experiment,
    config_arg=FLAGS["config"].config_filename,
    config_overrides=overrides,
    seeds=FLAGS.seeds,
    max_parallel=FLAGS.max_parallel,
    checkpoints_per_run=FLAGS.checkpoints_per_run,
    timing_iters=FLAGS.timing_iters,
    timing_batch_sizes=[int(b) for b in FLAGS.timing_batch_sizes],
    command="python -m experiments.paper " + shlex.join(sys.argv[1:]),
    compilation_cache_dir=cache,
  )
  logging.info("done: %s/summary.md", FLAGS.workdir)
  print(
    f"tables and figures in {FLAGS.workdir}/<experiment>/, summary in {FLAGS.workdir}/summary.md"
  )


if __name__ == "__main__":
  # The training subprocesses share the accelerator: this process allocates on demand.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  app.run(main)
