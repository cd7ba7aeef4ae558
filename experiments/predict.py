"""Joints of photographs or a video from a trained run: a JSON file and overlays.

  python -m experiments.predict --workdir=W --images='photos/*.jpg' --output_dir=D
  python -m experiments.predict --workdir=W --video=in.mp4 --output_dir=D

Images: D/predictions.json and one overlay per image, named after it
(photos/a.jpg → D/a.png). Video: D/in.mp4 (the video with overlays) and D/in.json
(`{"frames": [...]}`, one entry per frame). Joints are (x, y, score) in the
source's pixels, 0-based; a score is the coarse heat-map's value there, in
[0, 1] (≈ 1 confident, ≈ 0 not found).

Each image is letterboxed into the model's input; with several --scales (e.g.
0.8,1,1.25, the paper's multi-scale inference) the coarse heat-maps of every
scale are averaged and the cascade refines their argmax. With --torso_box
(image pixels, the same for every image) and a spatial model fitted in the
workdir, the MRF picks the person whose torso that is (paper §3.3).

A file that is not a readable image is reported and skipped; the others are
written, and the exit status is 3 when anything was skipped.
"""

import glob
import os

from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import fileio, predictor

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file, with :args (default: WORKDIR/config.json).", lock_config=True
)
flags.DEFINE_string("workdir", None, "The training run's workdir.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest usable one).")
flags.DEFINE_string("images", None, "An image file, a directory, or a glob pattern.")
flags.DEFINE_string("video", None, "A video file (mp4, avi, mov, ...).")
flags.DEFINE_string("output_dir", None, "Where the JSON and the overlays go.")
flags.DEFINE_list("scales", ["1.0"], "Zoom factors (must include 1.0).")
flags.DEFINE_list(
  "torso_box", None, "x1,y1,x2,y2 torso box in image pixels: the MRF picks that person."
)
flags.DEFINE_integer("batch_size", 8, "Images per device call.")
flags.mark_flags_as_required(["workdir", "output_dir"])

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(spec: str) -> list[str]:
  """The files `spec` names (a file, a directory's images, or a glob), sorted."""
  if os.path.isfile(spec):
    return [spec]
  if os.path.isdir(spec):
    paths = [os.path.join(spec, n) for n in os.listdir(spec)]
    paths = [p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)]
  else:
    paths = [p for p in glob.glob(spec) if os.path.isfile(p)]
  if not paths:
    raise ValueError(f"--images={spec!r} matches no file")
  return sorted(paths)


def _floats(name: str, values, n: int | None = None) -> list[float]:
  try:
    out = [float(v) for v in values]
  except ValueError:
    raise ValueError(f"--{name}={','.join(values)}: not numbers") from None
  if n is not None and len(out) != n:
    raise ValueError(f"--{name} needs {n} numbers, got {len(out)}")
  return out


def _record(result: dict) -> dict:
  return {
    "joints": {
      n: [float(x), float(y), float(s)]
      for n, (x, y), s in zip(result["names"], result["joints"], result["scores"], strict=True)
    },
    "image_hw": list(result["image_hw"]),
  }


def _unique_names(paths: list[str]) -> list[str]:
  """Overlay names after the sources' stems; a repeated stem gets its parent's name."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  out = []
  for p, s in zip(paths, stems, strict=True):
    parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
    out.append(f"{parent}_{s}" if stems.count(s) > 1 else s)
  return out


def predict_images(pred: predictor.Predictor, paths: list[str], out_dir: str, box) -> list[str]:
  """Predicts every readable image; returns the skipped ones' messages."""
  from tqdm.auto import tqdm

  records, skipped = [], []
  names = _unique_names(paths)
  bar = tqdm(total=len(paths), desc="predicting", unit="img", disable=None)
  for lo in range(0, len(paths), pred.batch_size):
    chunk, images = [], []
    for path, name in zip(
      paths[lo : lo + pred.batch_size], names[lo : lo + pred.batch_size], strict=True
    ):
      try:
        images.append(predictor.load_image(path))
        chunk.append((path, name))
      except predictor.ImageError as e:
        skipped.append(str(e))
        print(f"skipped {e}", flush=True)
    for (path, name), image, result in zip(
      chunk, images, pred(images, torso_box=box) if images else [], strict=True
    ):
      records.append({"image": path, **_record(result)})
      overlay = pred.draw(image, result, title=os.path.basename(path))
      fileio.save_image(os.path.join(out_dir, f"{name}.png"), overlay)
    bar.update(len(paths[lo : lo + pred.batch_size]))
  bar.close()
  fileio.write_json(
    os.path.join(out_dir, "predictions.json"),
    {
      "checkpoint_step": pred.step,
      "scales": list(pred.scales),
      "torso_box": box,
      "frame": "source image pixels, 0-based, pixel centres at integers: (x, y, score in [0, 1])",
      "predictions": records,
      "skipped": skipped,
    },
  )
  print(f"{len(records)} images -> {os.path.join(out_dir, 'predictions.json')}", flush=True)
  return skipped


def predict_video(pred: predictor.Predictor, path: str, out_dir: str, box) -> None:
  """Writes D/<name>.mp4 with overlays and D/<name>.json with every frame's joints."""
  import imageio.v2 as imageio
  from tqdm.auto import tqdm

  # Without its preexec_fn (os.setpgrp) imageio starts ffmpeg by posix_spawn, not by a
  # fork of this multithreaded (JAX) process; ffmpeg then also gets the terminal's ^C.
  os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

  try:
    reader = imageio.get_reader(path, "ffmpeg")
  except Exception as e:  # noqa: BLE001 - imageio raises several types for unreadable files
    raise ValueError(f"--video={path}: not a readable video ({launch.one_line(e)})") from None
  meta = reader.get_meta_data()
  fps = float(meta.get("fps") or 25.0)
  n = meta.get("nframes")
  total = int(n) if isinstance(n, int | float) and n != float("inf") else None
  stem = os.path.splitext(os.path.basename(path))[0]
  out_video = os.path.join(out_dir, f"{stem}.mp4")
  frames = []
  writer = imageio.get_writer(out_video + ".tmp.mp4", fps=fps, macro_block_size=1)
  bar = tqdm(total=total, desc="predicting", unit="frame", disable=None)
  try:
    batch = []

    def flush():
      for frame, result in zip(batch, pred(list(batch), torso_box=box), strict=True):
        frames.append({"frame": len(frames), "time_s": len(frames) / fps, **_record(result)})
        writer.append_data(pred.draw(frame, result, min_side=0, title=f"{stem} #{len(frames) - 1}"))
      bar.update(len(batch))
      batch.clear()

    for frame in reader:
      batch.append(frame[..., :3])
      if len(batch) == pred.batch_size:
        flush()
    if batch:
      flush()
  finally:
    bar.close()
    writer.close()
    reader.close()
  if not frames:
    os.remove(out_video + ".tmp.mp4")
    raise ValueError(f"--video={path}: no frames could be read")
  os.replace(out_video + ".tmp.mp4", out_video)
  fileio.write_json(
    os.path.join(out_dir, f"{stem}.json"),
    {
      "source": path,
      "fps": fps,
      "checkpoint_step": pred.step,
      "names": list(pred.names),
      "frame": "video pixels, 0-based, pixel centres at integers: (x, y, score in [0, 1])",
      "frames": frames,
    },
  )
  print(f"{len(frames)} frames -> {out_video}, {os.path.join(out_dir, stem + '.json')}", flush=True)


def main(argv):
  del argv
  if bool(FLAGS.images) == bool(FLAGS.video):
    raise ValueError("give exactly one of --images and --video")
  launch.setup()
  scales = _floats("scales", FLAGS.scales)
  box = _floats("torso_box", FLAGS.torso_box, 4) if FLAGS.torso_box else None
  if FLAGS.batch_size < 1:
    raise ValueError(f"--batch_size={FLAGS.batch_size}: must be >= 1")
  config = launch.config(FLAGS.workdir)
  pred = predictor.Predictor.from_workdir(
    FLAGS.workdir, step=FLAGS.step, config=config, scales=scales, batch_size=FLAGS.batch_size
  )
  if box is not None and pred.mrf is None:
    raise ValueError(
      f"--torso_box: {FLAGS.workdir} has no spatial model (train with "
      "--config.spatial_model.enabled=True)"
    )
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  if FLAGS.video:
    if not os.path.isfile(FLAGS.video):
      raise FileNotFoundError(f"--video={FLAGS.video}: no such file")
    predict_video(pred, FLAGS.video, FLAGS.output_dir, box)
    return
  skipped = predict_images(pred, image_paths(FLAGS.images), FLAGS.output_dir, box)
  if skipped:
    raise launch.Skipped(f"{len(skipped)} of the files were not readable images (listed above)")


if __name__ == "__main__":
  launch.run(main)
