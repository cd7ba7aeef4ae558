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

from absl import flags

from experiments import launch
from studies import precision

FLAGS = flags.FLAGS
launch.define_study_flags(
  "Runs go to WORKDIR/precision/runs/.",
  max_parallel=3,
  checkpoints_per_run=4,
  checkpoints_help="About this many checkpoints per run (all kept).",
)
launch.define_record_flags(
  "precision.json, precision.md, precision_records/", "The figures (default OUT_DIR)."
)
flags.DEFINE_list("pools", ["4", "8", "16"], "Pooling factors of this invocation.")
flags.DEFINE_list("groups", list(precision.GROUPS), "clean and/or noise (label noise in training).")
flags.DEFINE_float(
  "noise_px", precision.DEFAULT_NOISE_PX, "Label-noise σ, px at the paper's 80-px torso (scaled)."
)
flags.DEFINE_float("window_px", 0.0, "σ window ±px (0: ±20 px scaled with the torso).")
flags.DEFINE_integer("evals_per_run", 8, "Evaluations per run (the val-E1 curve).")


def main(argv):
  del argv
  launch.setup()
  precision.run_study(
    launch.config(),
    FLAGS.workdir,
    pools=[int(p) for p in FLAGS.pools],
    groups=FLAGS.groups,
    noise_px=FLAGS.noise_px,
    window_px=FLAGS.window_px,
    evals_per_run=FLAGS.evals_per_run,
    **launch.record_args(),
    **launch.study_args("experiments.precision_study"),
  )


if __name__ == "__main__":
  launch.run_study(main)
