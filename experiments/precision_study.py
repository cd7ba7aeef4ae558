"""The precision study (paper Table 1, Fig. 11, Fig. 12): coarse (phase-1 checkpoint)
vs cascade (final) σ of the x error, histograms and PCK at 4/8/16x pooling, with
and without label noise, several seeds (see studies/precision.py).

  python -m experiments.precision_study --config=heatpose_jax/configs/synthetic.py:paper,bf16 \
      --workdir=runs/precision --out_dir=docs/results --figures_dir=docs/figures \
      [--pools=8] [--groups=clean] [--seeds=0,1,2] [--max_parallel=3] [--config.key=value ...]

Runs with a matching record in OUT_DIR/precision_records/ are reused as they are;
finished runs are measured without training; the rest train (resumable). Every
invocation rewrites OUT_DIR/precision.{json,md} and the figures from all matching
records, so the study can be run piece by piece. `--notrain` only reports.
"""

import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from experiments import launch
from studies import precision

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "Runs go to WORKDIR/precision/runs/.")
flags.DEFINE_string(
  "out_dir", "", "precision.json, precision.md, precision_records/ (default WORKDIR)."
)
flags.DEFINE_string("figures_dir", "", "The figures (default OUT_DIR).")
flags.DEFINE_list("pools", ["4", "8", "16"], "Pooling factors of this invocation.")
flags.DEFINE_list("groups", list(precision.GROUPS), "clean and/or noise (label noise in training).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seed indices (seed = config.seed + index).")
flags.DEFINE_float(
  "noise_px", precision.DEFAULT_NOISE_PX, "Label-noise σ, px at the paper's 80-px torso (scaled)."
)
flags.DEFINE_float("window_px", 0.0, "σ window ±px (0: ±20 px scaled with the torso).")
flags.DEFINE_integer(
  "max_parallel", 3, "Training runs at a time (subprocesses); 0: in this process."
)
flags.DEFINE_integer("checkpoints_per_run", 4, "About this many checkpoints per run (all kept).")
flags.DEFINE_integer("evals_per_run", 8, "Evaluations per run (the val-E1 curve).")
flags.DEFINE_bool(
  "train", True, "Train missing runs; --notrain only measures finished runs and reports."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  launch.setup()
  config = launch.config()
  precision.run_study(
    config,
    FLAGS.workdir,
    FLAGS.out_dir or FLAGS.workdir,
    pools=[int(p) for p in FLAGS.pools],
    groups=FLAGS.groups,
    seeds=[int(s) for s in FLAGS.seeds],
    noise_px=FLAGS.noise_px,
    window_px=FLAGS.window_px,
    train=FLAGS.train,
    max_parallel=FLAGS.max_parallel,
    train_args=launch.study_train_args(),
    checkpoints_per_run=FLAGS.checkpoints_per_run,
    evals_per_run=FLAGS.evals_per_run,
    figures_dir=FLAGS.figures_dir,
    command="python -m experiments.precision_study " + shlex.join(sys.argv[1:]),
  )


if __name__ == "__main__":
  # Training subprocesses share the accelerator: this process allocates on demand.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  launch.run(main)
