"""Evaluates a run's checkpoint: one table, PCK curves, a predictions file for
`evaluate_predictions`, and skeleton overlays, in WORKDIR/eval_<split>/.

  python -m experiments.evaluate --workdir=/tmp/run [--split=test] [--step=N] [--evals=errors]

The run's own config (WORKDIR/config.json) is used unless --config is given.
Its evaluators (`config.evals`, modules of heatpose_jax.evaluation.evaluators or dotted
module paths, imported here) score the same predictions as the headline: their
results go into results.json under "evals", their tables at the end of table.txt.
--evals adds evaluators with their default arguments for this evaluation (`errors`:
correct / swap / near / miss and what the cascade fixes and breaks; `sigma`).
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import evaluate
from heatpose_jax.core import outputs
from heatpose_jax.mrf import spatial_training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir.")
flags.DEFINE_string("split", "", "Split to evaluate (default: config.eval_split).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest usable one).")
flags.DEFINE_integer("num_overlays", 8, "Skeleton overlay PNGs to write.")
flags.DEFINE_bool(
  "spatial_model",
  True,
  "Also score the MRF variants (coarse_mrf, cascade_mrf) when the workdir has a fitted "
  "spatial model (workdir/spatial_model/mrf.npz); --nospatial_model: never.",
)
flags.DEFINE_bool(
  "flip_test",
  None,
  "Average each estimate with its mirrored image's (config.eval.flip_test; default: the "
  "run's config).",
)
flags.DEFINE_bool(
  "fuse_coarse",
  None,
  "Decode the cascade's fine maps weighted by the coarse maps in each window "
  "(config.eval.fuse_coarse; default: the run's config).",
)
flags.DEFINE_list(
  "evals",
  [],
  "Evaluators to add, with their default arguments, by module (errors, sigma, or a dotted "
  "path): config.evals.<the module's last name> = dict(type=MODULE).",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  launch.setup()
  config = launch.config(FLAGS.workdir)
  with config.unlocked():
    if FLAGS.flip_test is not None:
      config.eval.flip_test = FLAGS.flip_test
    if FLAGS.fuse_coarse is not None:
      config.eval.fuse_coarse = FLAGS.fuse_coarse
    if FLAGS.evals and "evals" not in config:  # a run saved before evaluators existed
      config.evals = {}
    for module in FLAGS.evals:
      config.evals[module.rsplit(".", 1)[-1]] = {"type": module}
  if FLAGS.num_overlays < 0:
    raise ValueError(f"--num_overlays={FLAGS.num_overlays}: must be >= 0")
  # Settled before the model loads: where the results go (inside the run's own
  # workdir, nowhere else) and whether the spatial model it would score is readable.
  split = FLAGS.split or config.eval_split
  eval_dir = os.path.join(FLAGS.workdir, f"eval_{split}")
  if os.path.lexists(eval_dir) or os.path.isdir(FLAGS.workdir):
    outputs.prepare_dir(eval_dir if os.path.lexists(eval_dir) else FLAGS.workdir)
  if FLAGS.spatial_model:
    try:
      spatial_training.load(FLAGS.workdir)
    except ValueError as e:
      raise ValueError(f"{e}, or pass --nospatial_model") from None
  result = evaluate.evaluate_checkpoint(
    config,
    FLAGS.workdir,
    split=FLAGS.split,
    step=FLAGS.step,
    num_overlays=FLAGS.num_overlays,
    spatial_model=FLAGS.spatial_model,
  )
  print(
    f"files in {FLAGS.workdir}/eval_{FLAGS.split or config.eval_split}/ (step {result['step']})"
  )


if __name__ == "__main__":
  launch.run(main)
