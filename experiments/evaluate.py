"""Evaluates a workdir's newest checkpoint: the paper-style table, PCK curves,
a predictions file for `evaluate_predictions`, and skeleton overlays.

  python -m experiments.evaluate --config=heatpose_jax/configs/synthetic.py:tiny --workdir=/tmp/run
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, with :args.", lock_config=True)
flags.DEFINE_string("workdir", None, "The training run's workdir.")
flags.DEFINE_string("split", "", "Split to evaluate (default: config.eval_split).")
flags.DEFINE_integer("num_overlays", 8, "Skeleton overlay PNGs to write.")
flags.DEFINE_bool(
  "spatial_model",
  True,
  "Also score the MRF variants (coarse_mrf, cascade_mrf) when the workdir has a fitted "
  "spatial model (workdir/spatial_model/mrf.npz); --nospatial_model: never.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  launch.setup()
  result = train.evaluate_checkpoint(
    FLAGS.config,
    FLAGS.workdir,
    split=FLAGS.split,
    num_overlays=FLAGS.num_overlays,
    spatial_model=FLAGS.spatial_model,
  )
  print(
    f"results in {FLAGS.workdir}/eval_{FLAGS.split or FLAGS.config.eval_split}/ (step {result['step']})"
  )


if __name__ == "__main__":
  app.run(main)
