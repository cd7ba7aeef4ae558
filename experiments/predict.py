"""Joints of photographs or a video from a trained run: a JSON file and overlays.

  python -m experiments.predict --workdir=W --images='photos/*.jpg' --output_dir=D
  python -m experiments.predict --workdir=W --video=in.mp4 --output_dir=D

Images: D/predictions.json and one overlay per image, named after it
(photos/a.jpg → D/a.png; names that would meet, x.jpg and x.png or a/p/x.jpg and
b/p/x.jpg, get their folders and suffixes: D/x_jpg.png, D/a_p_x.png); each entry of
predictions.json names its image and its overlay. Video: D/in.mp4 (the video with
overlays) and D/in.json (`{"frames": [...]}`, one entry per frame). Joints are
(x, y, score) in the source's pixels, 0-based; a score is the coarse heat-map's
value there, in [0, 1] (≈ 1 confident, ≈ 0 not found).

Each image is letterboxed into the model's input; with several --scales (e.g.
0.8,1,1.25, the paper's multi-scale inference) the coarse heat-maps of every
scale are averaged and the cascade refines their argmax. With --torso_box
(image pixels, the same for every image) and a spatial model fitted in the
workdir, the MRF picks the person whose torso that is (paper §3.3).

Outputs never replace a file this command did not write: an overlay that would
land on an input (--output_dir = the photos' folder, a video's own folder) or on
any other existing file is refused up front, with one line naming both paths;
an earlier run's outputs in D are replaced.

Partial input is reported, never passed off as complete: every file of --images
that is not read (an unreadable or unsupported image such as .heic, a broken
link, a file that cannot be opened, a torso box outside it) is named with the
reason, a video that ends early or is damaged says how many frames it gave,
and the outputs hold what was read. The exit status is then 3, or 0 with
--skip_unreadable; 1 when nothing at all could be read.
"""

from __future__ import annotations

import glob
import math
import os
import re
import stat
import subprocess
import tempfile

import numpy as np
from absl import flags
from ml_collections import config_flags

from experiments import launch
from heatpose_jax import fileio, outputs, predictor

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
flags.DEFINE_bool(
  "skip_unreadable",
  False,
  "Exit 0 when some images or video frames could not be read (they are still reported); "
  "without it such a run exits with status 3.",
)
flags.mark_flags_as_required(["workdir", "output_dir"])

# Photographs Pillow reads (a folder's other files are listed as ignored).
IMAGE_EXTENSIONS = (
  ".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".png", ".apng", ".bmp", ".dib", ".gif",
  ".tif", ".tiff", ".webp", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi",
  ".jp2", ".j2k", ".mpo",
)  # fmt: skip
# Photographs it does not read: tried like the others and reported with this hint.
UNSUPPORTED_IMAGES = {
  ".heic": "HEIC is not supported: convert it to JPEG",
  ".heif": "HEIF is not supported: convert it to JPEG",
  ".jxl": "JPEG XL is not supported: convert it to JPEG or PNG",
  ".svg": "a vector drawing, not a photograph",
  **dict.fromkeys(
    (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"),
    "camera raw files are not supported: export a JPEG",
  ),
}
PREDICTIONS_JSON = "predictions.json"
# The keys that make a JSON one of this command's results (`outputs.json_with`).
IMAGES_JSON_KEYS = ("checkpoint_step", "frame", "predictions")
VIDEO_JSON_KEYS = ("checkpoint_step", "frame", "frames", "source")


# --- inputs -------------------------------------------------------------------------


class Inputs:
  """What --images names: `paths` to read, `ignored` (path, why) not read at all."""

  def __init__(self, spec: str):
    self.spec = spec
    self.folder = spec if os.path.isdir(spec) else None
    self.paths: list[str] = []
    self.ignored: list[tuple[str, str]] = []
    if self.folder is not None:
      for name in sorted(os.listdir(spec)):
        path = os.path.join(spec, name)
        ext = os.path.splitext(name)[1].lower()
        if name.startswith("."):
          self.ignored.append((path, "a hidden file"))
        elif os.path.isdir(path):
          self.ignored.append((path, "a folder (folders are not searched)"))
        elif ext in IMAGE_EXTENSIONS or ext in UNSUPPORTED_IMAGES:
          self.paths.append(path)
        else:
          self.ignored.append((path, f"not an image file name ({ext or 'no suffix'})"))
    elif os.path.lexists(spec):
      self.paths = [spec]
    else:
      for path in sorted(glob.glob(spec)):
        if os.path.isdir(path):
          self.ignored.append((path, "a folder"))
        else:
          self.paths.append(path)  # named by the user: tried, whatever its suffix
    if not self.paths:
      if self.ignored:
        listed = ", ".join(os.path.basename(p) for p, _ in self.ignored[:5])
        raise ValueError(f"--images={spec!r}: no image files (only {listed})")
      raise ValueError(f"--images={spec!r} matches no file")


def read_image(path: str) -> np.ndarray:
  """An image file → `(H, W, 3)` uint8, or `ImageError` saying why not."""
  if os.path.islink(path) and not os.path.exists(path):
    raise predictor.ImageError(f"{path}: a broken link (to {os.readlink(path)})")
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise predictor.ImageError(f"{path}: {outputs.os_reason(e)}") from None
  if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
    raise predictor.ImageError(f"{path}: not a regular file")
  if os.stat(path).st_size == 0:
    raise predictor.ImageError(f"{path}: an empty file (0 bytes)")
  if not os.access(path, os.R_OK):
    raise predictor.ImageError(f"{path}: no permission to read it")
  try:
    image = predictor.load_image(path)
  except predictor.ImageError as e:
    hint = UNSUPPORTED_IMAGES.get(os.path.splitext(path)[1].lower())
    if not hint:
      raise
    raise predictor.ImageError(f"{path}: {hint} ({str(e).removeprefix(f'{path}: ')})") from None
  return image


def frames_in(path: str) -> int:
  """How many frames or pages an image file holds (an animated GIF, a TIFF stack)."""
  from PIL import Image

  try:
    with Image.open(path) as im:
      return int(getattr(im, "n_frames", 1))
  except Exception:  # noqa: BLE001 - it was read once already; a count is only a note
    return 1


# --- outputs ------------------------------------------------------------------------


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


def check_image_outputs(inputs: Inputs, out_dir: str, names: list[str]) -> None:
  """Refuses, before any work, outputs that would replace an input or a user's file."""
  way_out = "choose another --output_dir"
  if inputs.folder is not None and outputs.same_file(inputs.folder, out_dir):
    # Even where no name meets, the next run on the folder would read the overlays.
    raise outputs.OutputError(
      f"--output_dir={out_dir} is the --images folder {inputs.folder}: the overlays would "
      f"be written among the photos (e.g. {os.path.join(out_dir, names[0])}.png beside "
      f"{inputs.paths[0]}); {way_out}"
    )
  planned = [(os.path.join(out_dir, PREDICTIONS_JSON), outputs.json_with(IMAGES_JSON_KEYS))]
  planned += [(os.path.join(out_dir, f"{n}.png"), outputs.image_is_ours) for n in names]
  everything = inputs.paths + [p for p, _ in inputs.ignored]
  outputs.check(planned, inputs=everything, way_out=way_out)


def predict_images(
  pred: predictor.Predictor, inputs: Inputs, out_dir: str, box, names: list[str]
) -> list[dict]:
  """Predicts every readable image; returns the skipped ones as {"image", "reason"}.

  predictions.json is written also when the run stops on an error (with what was
  done and `"complete": false`), so that no finished overlay is orphaned.
  """
  from tqdm.auto import tqdm

  paths = inputs.paths
  records, skipped = [], []
  complete = False

  def write_json():
    fileio.write_json(
      os.path.join(out_dir, PREDICTIONS_JSON),
      {
        "checkpoint_step": pred.step,
        "scales": list(pred.scales),
        "torso_box": box,
        "frame": "source image pixels, 0-based, pixel centres at integers: (x, y, score in [0, 1])",
        "complete": complete,
        "predictions": records,
        "skipped": skipped,
        "ignored": [{"file": p, "reason": r} for p, r in inputs.ignored],
      },
    )

  bar = tqdm(total=len(paths), desc="predicting", unit="img", disable=None)
  try:
    for lo in range(0, len(paths), pred.batch_size):
      chunk, images = [], []
      for path, name in zip(
        paths[lo : lo + pred.batch_size], names[lo : lo + pred.batch_size], strict=True
      ):
        try:
          image = read_image(path)
          if box is not None:
            try:
              predictor.check_torso_box(box, image.shape[:2], "it")
            except ValueError as e:
              raise predictor.ImageError(f"{path}: {e}") from None
          images.append(image)
          chunk.append((path, name))
        except predictor.ImageError as e:
          reason = str(e)[len(path) + 2 :] if str(e).startswith(f"{path}: ") else str(e)
          skipped.append({"image": path, "reason": reason})
          print(f"skipped {path}: {reason}", flush=True)
      for (path, name), image, result in zip(
        chunk, images, pred(images, torso_box=box) if images else [], strict=True
      ):
        overlay = pred.draw(image, result, title=os.path.basename(path))
        fileio.save_image(os.path.join(out_dir, f"{name}.png"), overlay)
        record = {"image": path, "overlay": f"{name}.png", **_record(result)}
        if (n := frames_in(path)) > 1:
          record["note"] = f"{n} frames or pages in the file: the first one was read"
          print(f"note {path}: {record['note']}", flush=True)
        records.append(record)
      bar.update(len(paths[lo : lo + pred.batch_size]))
    complete = True
  finally:
    bar.close()
    if records:
      try:
        write_json()
      except OSError:
        if complete:
          raise
        # Already failing: the first error is the one to report.
  target = os.path.join(out_dir, PREDICTIONS_JSON)
  if not records:
    first = skipped[0]
    raise ValueError(
      f"none of the {len(paths)} image file(s) could be read (first: {first['image']}: "
      f"{first['reason']})"
    )
  summary = f"read {len(records)} of {len(paths)} image file(s)"
  if skipped:
    summary += f", skipped {len(skipped)} (listed above)"
  if inputs.ignored:
    listed = ", ".join(os.path.basename(p) for p, _ in inputs.ignored[:5])
    more = ", ..." if len(inputs.ignored) > 5 else ""
    summary += f"; ignored {len(inputs.ignored)} other file(s) in the folder ({listed}{more})"
  print(f"{summary} -> {target}", flush=True)
  return skipped


# --- video --------------------------------------------------------------------------


class VideoFrames:
  """The frames of a video, with what went wrong reading them.

  Meta data (fps, duration) come from imageio's ffmpeg reader; the frames from
  ffmpeg at log level `error` as a PPM stream (each frame carries its size), so
  that a file that ends early or is damaged is known: after iterating, `problem`
  says what ffmpeg reported or how many frames are missing, or is None.
  """

  def __init__(self, path: str):
    import imageio.v2 as imageio

    self.path = path
    try:
      reader = imageio.get_reader(path, "ffmpeg")
      try:
        meta = reader.get_meta_data()
      finally:
        reader.close()
    except Exception as e:  # noqa: BLE001 - imageio raises several types for unreadable files
      raise ValueError(f"--video={path}: not a readable video ({launch.one_line(e)})") from None
    fps = meta.get("fps")
    self.fps = (
      float(fps) if isinstance(fps, int | float) and math.isfinite(fps) and fps > 0 else 25.0
    )
    duration = meta.get("duration")
    ok = isinstance(duration, int | float) and math.isfinite(duration) and duration > 0
    self.expected = round(duration * self.fps) if ok else None
    self.count = 0
    self.problem: str | None = None

  def __iter__(self):
    import imageio_ffmpeg

    cmd = [
      imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", self.path,
      "-map", "0:v:0", "-f", "image2pipe", "-vcodec", "ppm", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
      proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
      finished = False
      try:
        while (frame := _read_ppm(proc.stdout)) is not None:
          self.count += 1
          yield frame
        finished = True
      finally:
        proc.stdout.close()
        if not finished:
          proc.kill()
        code = proc.wait()
        log.seek(0)
        lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
    if lines or code != 0:
      said = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else f"exit status {code}"
      self.problem = f"damaged or cut short (ffmpeg: {launch.one_line(said, 200)})"
    elif self.expected and self.count < self.expected - max(2, 0.05 * self.expected):
      self.problem = "it ends early"
    if self.problem:
      of = f" of about {self.expected}" if self.expected else ""
      self.problem = f"read {self.count}{of} frames: {self.problem}"


def _read_ppm(stream) -> np.ndarray | None:
  """One binary PPM (P6, 8 bits) from `stream`; None at the end of the stream."""
  magic = stream.readline()
  if not magic:
    return None
  if magic.strip() != b"P6":
    raise ValueError(f"unexpected frame header {magic[:20]!r}")
  fields: list[bytes] = []
  while len(fields) < 3:
    line = stream.readline()
    if not line:
      return None
    fields += line.split(b"#")[0].split()
  w, h, _ = (int(v) for v in fields)
  data = stream.read(w * h * 3)
  if len(data) < w * h * 3:
    return None
  return np.frombuffer(data, np.uint8).reshape(h, w, 3)


def _even(frame: np.ndarray) -> np.ndarray:
  """H.264 (yuv420p) needs even sides: an odd one gets a copy of its last row/column."""
  h, w = frame.shape[:2]
  if h % 2 or w % 2:
    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  return frame


def video_outputs(path: str, out_dir: str) -> tuple[str, str]:
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.join(out_dir, f"{stem}.mp4"), os.path.join(out_dir, f"{stem}.json")


def check_video_outputs(path: str, out_dir: str) -> None:
  out_video, out_json = video_outputs(path, out_dir)
  ours = outputs.json_with(VIDEO_JSON_KEYS)
  outputs.check(
    [(out_json, ours), (out_video, outputs.companion(out_json, ours))],
    inputs=[path],
    way_out="choose another --output_dir",
  )


def predict_video(pred: predictor.Predictor, path: str, out_dir: str, box) -> str | None:
  """Writes D/<name>.mp4 with overlays and D/<name>.json with every frame's joints.

  Returns what was not read (None: the whole video was).
  """
  import imageio.v2 as imageio
  from tqdm.auto import tqdm

  # Without its preexec_fn (os.setpgrp) imageio starts ffmpeg by posix_spawn, not by a
  # fork of this multithreaded (JAX) process; ffmpeg then also gets the terminal's ^C.
  os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

  video = VideoFrames(path)
  fps = video.fps
  out_video, out_json = video_outputs(path, out_dir)
  stem = os.path.splitext(os.path.basename(out_video))[0]
  tmp = os.path.join(out_dir, f".{stem}.tmp-{os.getpid()}.mp4")
  frames, size = [], None
  writer = imageio.get_writer(tmp, fps=fps, macro_block_size=1, ffmpeg_log_level="error")
  bar = tqdm(total=video.expected, desc="predicting", unit="frame", disable=None)
  written = False
  try:
    batch = []

    def flush():
      nonlocal size
      if box is not None and not frames:
        predictor.check_torso_box(box, batch[0].shape[:2], f"--video={path}")
      for frame, result in zip(batch, pred(list(batch), torso_box=box), strict=True):
        frames.append({"frame": len(frames), "time_s": len(frames) / fps, **_record(result)})
        drawn = _even(pred.draw(frame, result, min_side=0, title=f"{stem} #{len(frames) - 1}"))
        size = drawn.shape[:2]
        try:
          writer.append_data(drawn)
        except (OSError, RuntimeError, ValueError) as e:
          raise OSError(
            f"{out_video}: the video could not be written ({launch.one_line(e)})"
          ) from None
      bar.update(len(batch))
      batch.clear()

    for frame in video:
      batch.append(frame)
      if len(batch) == pred.batch_size:
        flush()
    if batch:
      flush()
    try:
      writer.close()
    except (OSError, RuntimeError, ValueError) as e:
      raise OSError(f"{out_video}: the video could not be written ({launch.one_line(e)})") from None
    if frames:
      os.replace(tmp, out_video)
      written = True
  finally:
    bar.close()
    if not written:
      try:
        writer.close()
      except Exception:  # noqa: BLE001 - already failing: the first error is reported
        pass
      if os.path.exists(tmp):
        os.remove(tmp)
  if not frames:
    raise ValueError(f"--video={path}: no frames could be read ({video.problem or 'empty'})")
  fileio.write_json(
    out_json,
    {
      "source": path,
      "overlay": os.path.basename(out_video),
      "fps": fps,
      "checkpoint_step": pred.step,
      "names": list(pred.names),
      "frame": "video pixels, 0-based, pixel centres at integers: (x, y, score in [0, 1])",
      "complete": video.problem is None,
      "problem": video.problem,
      "overlay_hw": list(size),
      "frames": frames,
    },
  )
  h, w = frames[0]["image_hw"]
  if tuple(size) != (h, w):
    print(f"the overlay video is {size[1]}×{size[0]} (H.264 needs even sides; source {w}×{h})")
  print(f"{len(frames)} frames -> {out_video}, {out_json}", flush=True)
  return video.problem


def main(argv):
  del argv
  if bool(FLAGS.images) == bool(FLAGS.video):
    raise ValueError("give exactly one of --images and --video")
  scales = _floats("scales", FLAGS.scales)
  box = _floats("torso_box", FLAGS.torso_box, 4) if FLAGS.torso_box else None
  if box is not None:
    predictor.torso_box_array(box)
  if FLAGS.batch_size < 1:
    raise ValueError(f"--batch_size={FLAGS.batch_size}: must be >= 1")
  # Everything about the inputs and the outputs is settled before the model loads.
  out_dir = FLAGS.output_dir
  if FLAGS.video:
    if not os.path.isfile(FLAGS.video):
      raise FileNotFoundError(f"--video={FLAGS.video}: no such file")
    outputs.prepare_dir(out_dir, "--output_dir")
    check_video_outputs(FLAGS.video, out_dir)
  else:
    inputs = Inputs(FLAGS.images)
    names = outputs.unique_stems(inputs.paths)
    outputs.prepare_dir(out_dir, "--output_dir")
    check_image_outputs(inputs, out_dir, names)
  launch.setup()
  config = launch.config(FLAGS.workdir)
  pred = predictor.Predictor.from_workdir(
    FLAGS.workdir,
    step=FLAGS.step,
    config=config,
    scales=scales,
    batch_size=FLAGS.batch_size,
    spatial_model=box is not None,  # a damaged mrf.npz matters only to --torso_box
  )
  if box is not None and pred.mrf is None:
    raise ValueError(
      f"--torso_box: {pred.mrf_error}"
      if pred.mrf_error
      else f"--torso_box: {FLAGS.workdir} has no spatial model (train with "
      "--config.spatial_model.enabled=True)"
    )
  if FLAGS.video:
    problem = predict_video(pred, FLAGS.video, out_dir, box)
    if problem:
      print(f"--video={FLAGS.video}: {problem}", flush=True)
      if not FLAGS.skip_unreadable:
        raise launch.Skipped(
          f"--video={FLAGS.video}: {problem}; the outputs hold those frames "
          "(--skip_unreadable accepts that)"
        )
    return
  skipped = predict_images(pred, inputs, out_dir, box, names)
  if skipped and not FLAGS.skip_unreadable:
    raise launch.Skipped(
      f"{len(skipped)} of {len(inputs.paths)} image file(s) not read (listed above; "
      "--skip_unreadable accepts that)"
    )


if __name__ == "__main__":
  launch.run(main)
