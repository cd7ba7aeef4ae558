"""The MRF person-selection study (paper §3.3) on synthetic scenes with a distractor.

  python -m experiments.mrf_study --workdir=runs/mrf_study \
      --config=heatpose_jax/configs/synthetic.py:tfds=distractor,steps=3000

Trains the cascade (resumable; an already trained workdir is reused), fits the
MRF (`config.spatial_model`), and writes WORKDIR/mrf_study/table.md, table.json,
figure.png and overlays.png: right-person rate and PCKh of coarse, cascade,
coarse+MRF and cascade+MRF, on the person-centred crop and the whole image.
"""

from absl import flags
from ml_collections import config_flags

from experiments import launch
from studies import mrf_study

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir (created or reused).")
flags.DEFINE_string("output_dir", "", "Default: WORKDIR/mrf_study.")
flags.DEFINE_list("views", list(mrf_study.VIEWS), "Canvases: person (the crop), image (whole).")
flags.DEFINE_bool("train", True, "Train first (resumes; a finished run only re-evaluates).")
flags.DEFINE_integer("num_overlays", 6, "Scenes in overlays.png.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  launch.setup()
  mrf_study.run_study(
    launch.config(FLAGS.workdir),
    FLAGS.workdir,
    out_dir=FLAGS.output_dir,
    views=FLAGS.views,
    train_first=FLAGS.train,
    num_overlays=FLAGS.num_overlays,
  )
  print(f"results in {FLAGS.output_dir or FLAGS.workdir + '/mrf_study'}/table.md")


if __name__ == "__main__":
  launch.run(main)
