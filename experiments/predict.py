"""Predicts joints on photographs: a JSON of joints and skeleton overlay PNGs.

  python -m experiments.predict --config=heatpose_jax/configs/synthetic.py:tiny \
      --workdir=/tmp/run --images='photos/*.jpg' --output_dir=/tmp/pred [--scales=0.8,1,1.25]

Each image is letterboxed into the model's input; with several --scales the
coarse heat-maps of every scale are averaged and the cascade refines their argmax.

Person selection (paper §3.3): with --torso_box=x1,y1,x2,y2 (image pixels, the
same box for every image) and a spatial model fitted in the workdir
(workdir/spatial_model/mrf.npz, `config.spatial_model.enabled`), the MRF picks the
person whose torso that is and the cascade refines its joints. Photographs have
no torso box otherwise, so without --torso_box the MRF is skipped.
"""

import glob
import os

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from experiments import launch
from heatpose_jax import evaluation, inference, spatial_training, train
from heatpose_jax import joints as joints_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The training run's config, with :args.")
flags.DEFINE_string("workdir", None, "The training run's workdir (newest checkpoint).")
flags.DEFINE_string("images", None, "Image file, directory, or glob pattern.")
flags.DEFINE_string("output_dir", None, "Where predictions.json and overlays go.")
flags.DEFINE_list("scales", ["1.0"], "Zoom factors (must include 1.0).")
flags.DEFINE_list(
  "torso_box",
  None,
  "x1,y1,x2,y2 torso box in image pixels (applied to every image): the workdir's "
  "spatial model selects that person.",
)
flags.DEFINE_bool("spatial_model", True, "Use the workdir's spatial model with --torso_box.")
flags.mark_flags_as_required(["config", "workdir", "images", "output_dir"])


def _image_paths(spec: str) -> list[str]:
  if os.path.isdir(spec):
    spec = os.path.join(spec, "*")
  exts = (".jpg", ".jpeg", ".png", ".bmp")
  paths = sorted(p for p in glob.glob(spec) if p.lower().endswith(exts))
  if not paths:
    raise app.UsageError(f"--images={spec!r} matches no .jpg/.jpeg/.png/.bmp file")
  return paths


def main(argv):
  del argv
  launch.setup()
  config = FLAGS.config
  scales = tuple(float(s) for s in FLAGS.scales)
  skeleton = joints_lib.get_skeleton(config.dataset)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  model, params, step = train.load_params(config, FLAGS.workdir, mesh)
  hw = tuple(config.input_hw)
  predict_fn = inference.make_predictor(model, hw, scales)
  torso = None
  if FLAGS.torso_box:
    if len(FLAGS.torso_box) != 4:
      raise app.UsageError(f"--torso_box needs x1,y1,x2,y2, got {FLAGS.torso_box}")
    torso = [float(v) for v in FLAGS.torso_box]
  mrf = spatial_training.load(FLAGS.workdir) if FLAGS.spatial_model else None
  if mrf is not None and torso is None:
    logging.warning("no --torso_box: the spatial model is skipped (photos have no torso box)")
  elif mrf is None and torso is not None:
    logging.warning(
      "--torso_box ignored: %s",
      "--nospatial_model"
      if not FLAGS.spatial_model
      else f"{FLAGS.workdir} has no spatial model (--config.spatial_model.enabled=True fits one)",
    )
  use_mrf = mrf is not None and torso is not None
  if use_mrf:
    mrf_fn = spatial_training.make_photo_predictor(model, mrf.spec, hw, scales)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  records = []
  for k, path in enumerate(_image_paths(FLAGS.images)):
    try:
      image = np.asarray(Image.open(path).convert("RGB"))
    except OSError as e:
      raise app.UsageError(f"{path}: unreadable image ({e})") from e
    if use_mrf:
      xy, score = spatial_training.predict_image(
        mrf_fn, params, mrf.params, image, hw, torso, scales
      )
    else:
      xy, score = inference.predict_image(predict_fn, params, image, hw, scales)
    records.append(
      {
        "image": path,
        "joints": {
          n: [float(xy[j, 0]), float(xy[j, 1]), float(score[j])]
          for j, n in enumerate(skeleton.model_joints)
        },
      }
    )
    overlay = evaluation.draw_skeletons(image, xy, skeleton)
    Image.fromarray(overlay).save(os.path.join(FLAGS.output_dir, f"overlay_{k:04d}.png"))
  out = os.path.join(FLAGS.output_dir, "predictions.json")
  evaluation.write_json_atomic(
    {
      "checkpoint_step": step,
      "scales": scales,
      "spatial_model": use_mrf,
      "torso_box": torso if use_mrf else None,
      "frame": "image pixels, 0-based (x, y, score)",
      "predictions": records,
    },
    out,
  )
  print(f"{len(records)} images -> {out}")


if __name__ == "__main__":
  app.run(main)
