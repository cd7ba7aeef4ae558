"""Joints of photographs or a video from a trained run: a JSON file and overlays.

  python -m experiments.predict --workdir=W --images='photos/*.jpg' --output_dir=D
  python -m experiments.predict --workdir=W --video=in.mp4 --output_dir=D
  python -m experiments.predict --workdir=W --images=DIR --boxes=DETECTIONS.json \
    --box_threshold=0.5 [--rescore=0.2] [--oks_nms=0.9] [--annotations=ANNOTATIONS.json] \
    --output_dir=D

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

Top-down, with --boxes (a COCO detection-results file, [{image_id, category_id,
bbox [x, y, w, h], score}], or an annotation file: its people's boxes, score 1):
each box scoring at least --box_threshold gives one pose, cropped as the
dataset's builder crops its people (`heatpose_jax.data.topdown`). A box's image_id is
matched to an image of --images by --annotations' `images` (id → file_name, matched
by base name) when given (or when --boxes is an annotation file), else by file
name: `000000397133.jpg` is image_id 397133 (and "000000397133"). D gets
keypoint_results.json, COCO's keypoint results ([{image_id, category_id,
keypoints [x, y, s] × K, score}]: what `experiments.evaluate_predictions
--dataset=coco` reads; s the joint's score, score = the box's × the mean joint
score, or with --rescore=T (HRNet: 0.2) × the mean of the joint scores above T;
category_id the detection's, or the keypoint category of the annotation file), predictions.json (per image its `poses`) and one overlay per image with
boxes. Entries of --boxes that cannot be read are listed and skipped (exit 3);
boxes of images not in --images are counted. --oks_nms=T (HRNet: 0.9) drops, per
image, every pose whose OKS to a better-scoring kept pose exceeds T (HRNet's greedy
OKS-NMS, area the box's w·h: `heatpose_jax.evaluation.oks_nms`, docs/coco.md); they
are listed per image under `removed` and counted.

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

import collections
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
from heatpose_jax import predictor
from heatpose_jax.core import fileio, outputs
from heatpose_jax.data import coco_format
from heatpose_jax.evaluation import oks_nms

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
flags.DEFINE_string(
  "boxes", None, "Person boxes: a COCO detection-results JSON or an annotation file (top-down)."
)
flags.DEFINE_float("box_threshold", 0.0, "--boxes: use the boxes scoring at least this.")
flags.DEFINE_string(
  "annotations", None, "--boxes: a COCO annotation file whose images map image_id to file_name."
)
flags.DEFINE_float(
  "oks_nms",
  None,
  "--boxes: OKS-NMS of each image's poses, dropping those with OKS > this to a better one "
  "(HRNet: 0.9); default off.",
)
flags.DEFINE_float(
  "rescore",
  None,
  "--boxes: a pose's score = box score × the mean of its joint scores above this (HRNet: "
  "0.2); default the mean of all.",
)
flags.DEFINE_integer("batch_size", 8, "Images per device call.")
flags.DEFINE_bool(
  "flip_test", False, "Average each estimate with its mirrored image's (2x the compute)."
)
flags.DEFINE_bool(
  "fuse_coarse",
  None,
  "Decode the fine maps weighted by the coarse maps in each window (default: the run's "
  "config.eval.fuse_coarse).",
)
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
KEYPOINT_RESULTS_JSON = "keypoint_results.json"
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


def check_image_outputs(inputs: Inputs, out_dir: str, names: list[str], plan=None) -> None:
  """Refuses, before any work, outputs that would replace an input or a user's file."""
  way_out = "choose another --output_dir"
  if inputs.folder is not None and outputs.same_file(inputs.folder, out_dir):
    # Even where no name meets, the next run on the folder would read the overlays.
    raise outputs.OutputError(
      f"--output_dir={out_dir} is the --images folder {inputs.folder}: the overlays would "
      f"be written among the photos (e.g. {os.path.join(out_dir, names[0])}.png beside "
      f"{inputs.paths[0]}); {way_out}"
    )
  ours = outputs.json_with(IMAGES_JSON_KEYS)
  planned = [(os.path.join(out_dir, PREDICTIONS_JSON), ours)]
  planned += [(os.path.join(out_dir, f"{n}.png"), outputs.image_is_ours) for n in names]
  everything = inputs.paths + [p for p, _ in inputs.ignored]
  if plan is not None:
    results = os.path.join(out_dir, KEYPOINT_RESULTS_JSON)
    planned.append((results, outputs.companion(planned[0][0], ours)))
    everything += plan.sources
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
        "flip_test": pred.flip_test,
        "fuse_coarse": pred.fuse_coarse,
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


# --- top-down: person boxes ---------------------------------------------------------


class BoxPlan:
  """Which boxes of --boxes go with which image of --images (module docstring).

  Attributes:
    by_path: image path → its boxes scoring ≥ the threshold, in file order:
      [{image_id, category_id, box (4,) x1, y1, x2, y2 image pixels, score}].
    category_id: the keypoint category of the annotation file, or None.
    problems: the --boxes entries that could not be read, {"image", "reason"}.
    report: counts of boxes read, used, and not used (and why).
    sources: the JSON files read (never written over).
  """

  def __init__(self, inputs: Inputs, boxes: str, annotations: str | None, threshold: float):
    dets, problems, gt = coco_format.read_boxes(boxes)
    if annotations:
      gt = coco_format.load_json(annotations, "--annotations")
      coco_format.check_annotation_file(gt, annotations)
    cat = coco_format.keypoint_category(gt, annotations or boxes) if gt is not None else None
    self.category_id = None if cat is None else cat["id"]
    ids = image_ids(inputs.paths, gt)
    self.by_path: dict[str, list[dict]] = collections.defaultdict(list)
    unused: collections.Counter[str] = collections.Counter()
    for d in dets:
      if d["score"] < threshold:
        unused["below --box_threshold"] += 1
      elif self.category_id is not None and d["category_id"] != self.category_id:
        unused["of another category"] += 1
      elif d["image_id"] not in ids:
        unused["of images not in --images"] += 1
      else:
        self.by_path[ids[d["image_id"]]].append(d)
    self.problems = [{"image": boxes, "reason": f"entry {p}"} for p in problems]
    for p in self.problems:
      print(f"skipped --boxes {p['reason']}", flush=True)
    used = sum(len(v) for v in self.by_path.values())
    self.report = {
      "read": len(dets),
      "used": used,
      **{f"not used: {k}": n for k, n in unused.items()},
    }
    self.sources = [boxes] + ([annotations] if annotations else [])


def image_ids(paths: list[str], gt: dict | None) -> dict:
  """image_id → image path: through the annotation file's `images` (its file_name's
  base name) where there is one, else by file name (`000000397133.jpg` → 397133 and
  "000000397133")."""
  if gt is not None:
    by_name = {os.path.basename(p): p for p in paths}
    return {
      im["id"]: by_name[os.path.basename(im["file_name"])]
      for im in gt["images"]
      if isinstance(im, dict)
      and "id" in im
      and isinstance(im.get("file_name"), str)
      and os.path.basename(im["file_name"]) in by_name
    }
  out: dict = {}
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0]
    out[stem] = p
    if stem.isdigit():
      out[int(stem)] = p
  return out


def _keypoints(result: dict) -> np.ndarray:
  """(K, 3) x, y (image pixels, 0-based), joint score."""
  return np.concatenate([result["joints"], result["scores"][:, None]], axis=1)


def _pose_score(result: dict, det: dict) -> float:
  """Box score × the mean joint score; with --rescore=T the mean of the joint
  scores above T only, 0 when none is (HRNet's rescoring, `in_vis_thre` 0.2)."""
  joint = np.asarray(result["scores"], np.float64)
  if FLAGS.rescore is not None:
    joint = joint[joint > FLAGS.rescore]
  return float(det["score"]) * (float(np.mean(joint)) if joint.size else 0.0)


def coco_result(result: dict, det: dict, category_id) -> dict:
  """One pose as a COCO keypoint result: keypoints [x, y, joint score] × K (image
  pixels, 0-based: COCO's keypoint frame), score = `_pose_score`."""
  cat = category_id if category_id is not None else det.get("category_id")
  return {
    "image_id": det["image_id"],
    "category_id": 1 if cat is None else cat,
    "keypoints": [round(float(v), 3) for v in _keypoints(result).ravel()],
    "score": round(_pose_score(result, det), 6),
  }


def nms_poses(
  poses: list[dict], dets: list[dict], sigmas: np.ndarray, threshold: float
) -> tuple[list[int], list[dict]]:
  """--oks_nms on the poses of one image (`oks_nms.oks_nms`; area: the box's w·h,
  score: the result's). Returns the kept indices (file order) and the others as
  {box, box_score, reason "oks_nms", oks: their highest OKS to a kept pose}."""
  kp = np.stack([_keypoints(r) for r in poses])
  scores = [_pose_score(r, d) for r, d in zip(poses, dets, strict=True)]
  boxes = np.array([d["box"] for d in dets], np.float64)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  oks = oks_nms.pairwise_oks(kp, areas, sigmas)
  keep = sorted(oks_nms.suppress(oks, scores, threshold).tolist())
  removed = [
    {
      "box": [float(v) for v in dets[i]["box"]],
      "box_score": dets[i]["score"],
      "reason": "oks_nms",
      "oks": round(float(oks[keep, i].max()), 4),
    }
    for i in sorted(set(range(len(poses))) - set(keep))
  ]
  return keep, removed


def _pose_record(result: dict, det: dict) -> dict:
  return {"box": [float(v) for v in det["box"]], "box_score": det["score"], **_record(result)}


def predict_boxes(
  pred: predictor.Predictor,
  inputs: Inputs,
  out_dir: str,
  names: list[str],
  plan: BoxPlan,
  nms: tuple[np.ndarray, float] | None = None,
) -> list[dict]:
  """A pose per box of `plan`: keypoint_results.json, predictions.json and an overlay
  per image with boxes. `nms`: (sigmas, threshold) of --oks_nms, or None. Returns the
  images skipped, {"image", "reason"}."""
  from tqdm.auto import tqdm

  records, results, skipped = [], [], []
  if nms is not None:
    plan.report["not used: oks_nms"] = 0
  todo = [(p, n) for p, n in zip(inputs.paths, names, strict=True) if plan.by_path.get(p)]
  complete = False
  try:
    for path, name in tqdm(todo, desc="predicting", unit="img", disable=None):
      dets = plan.by_path[path]
      try:
        image = read_image(path)
        poses = pred(image, boxes=[d["box"] for d in dets])
      except (predictor.ImageError, ValueError) as e:  # unreadable, or a box off the image
        reason = str(e).removeprefix(f"{path}: ")
        skipped.append({"image": path, "reason": reason})
        print(f"skipped {path}: {reason}", flush=True)
        continue
      removed = None
      if nms is not None:
        keep, removed = nms_poses(poses, dets, *nms)
        poses, dets = [poses[i] for i in keep], [dets[i] for i in keep]
        plan.report["used"] -= len(removed)
        plan.report["not used: oks_nms"] += len(removed)
      fileio.save_image(
        os.path.join(out_dir, f"{name}.png"), pred.draw(image, poses, title=os.path.basename(path))
      )
      pose_records = [_pose_record(r, d) for r, d in zip(poses, dets, strict=True)]
      record = {"image": path, "overlay": f"{name}.png", "poses": pose_records}
      if removed is not None:
        record["removed"] = removed
      records.append(record)
      results += [coco_result(r, d, plan.category_id) for r, d in zip(poses, dets, strict=True)]
    complete = True
  finally:
    _write_box_outputs(pred, inputs, out_dir, plan, records, results, skipped, complete)
  print(
    f"{len(results)} poses on {len(records)} of {len(inputs.paths)} image(s) "
    f"({', '.join(f'{k} {v}' for k, v in plan.report.items())} boxes) -> "
    f"{os.path.join(out_dir, KEYPOINT_RESULTS_JSON)}",
    flush=True,
  )
  return skipped


def _write_box_outputs(pred, inputs, out_dir, plan, records, results, skipped, complete):
  with_boxes = set(plan.by_path)
  fileio.write_json(os.path.join(out_dir, KEYPOINT_RESULTS_JSON), results)
  fileio.write_json(
    os.path.join(out_dir, PREDICTIONS_JSON),
    {
      "checkpoint_step": pred.step,
      "scales": list(pred.scales),
      "flip_test": pred.flip_test,
      "fuse_coarse": pred.fuse_coarse,
      "boxes": plan.sources[0],
      "box_threshold": FLAGS.box_threshold,
      "oks_nms": FLAGS.oks_nms,
      "rescore": FLAGS.rescore,
      "frame": "source image pixels, 0-based, pixel centres at integers: (x, y, score in [0, 1])",
      "complete": complete,
      "keypoint_results": KEYPOINT_RESULTS_JSON,
      "boxes_report": plan.report,
      "predictions": records,
      "without_boxes": [p for p in inputs.paths if p not in with_boxes],
      "skipped": skipped + plan.problems,
      "ignored": [{"file": p, "reason": r} for p, r in inputs.ignored],
    },
  )


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


def _check_flags() -> tuple[list[float], list[float] | None]:
  """(scales, torso box or None) from the flags, which are checked together."""
  if bool(FLAGS.images) == bool(FLAGS.video):
    raise ValueError("give exactly one of --images and --video")
  if FLAGS.boxes and (FLAGS.video or FLAGS.torso_box):
    raise ValueError("--boxes goes with --images, without --torso_box")
  if FLAGS.annotations and not FLAGS.boxes:
    raise ValueError("--annotations goes with --boxes")
  if FLAGS.oks_nms is not None:
    if not FLAGS.boxes:
      raise ValueError("--oks_nms goes with --boxes")
    if not 0 < FLAGS.oks_nms <= 1:  # NaN too
      raise ValueError(f"--oks_nms={FLAGS.oks_nms}: an OKS threshold in (0, 1] (HRNet: 0.9)")
  if FLAGS.rescore is not None:
    if not FLAGS.boxes:
      raise ValueError("--rescore goes with --boxes")
    if not 0 <= FLAGS.rescore < 1:  # NaN too
      raise ValueError(f"--rescore={FLAGS.rescore}: a joint score threshold in [0, 1) (HRNet: 0.2)")
  scales = _floats("scales", FLAGS.scales)
  box = _floats("torso_box", FLAGS.torso_box, 4) if FLAGS.torso_box else None
  if box is not None:
    predictor.torso_box_array(box)
  if FLAGS.batch_size < 1:
    raise ValueError(f"--batch_size={FLAGS.batch_size}: must be >= 1")
  return scales, box


def main(argv):
  del argv
  scales, box = _check_flags()
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
    plan = (
      BoxPlan(inputs, FLAGS.boxes, FLAGS.annotations, FLAGS.box_threshold) if FLAGS.boxes else None
    )
    outputs.prepare_dir(out_dir, "--output_dir")
    check_image_outputs(inputs, out_dir, names, plan)
  launch.setup()
  config = launch.config(FLAGS.workdir)
  pred = predictor.Predictor.from_workdir(
    FLAGS.workdir,
    step=FLAGS.step,
    config=config,
    scales=scales,
    batch_size=FLAGS.batch_size,
    flip_test=FLAGS.flip_test,
    fuse_coarse=FLAGS.fuse_coarse,
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
  if plan is not None:
    nms = None
    if FLAGS.oks_nms is not None:
      try:
        nms = (oks_nms.joint_sigmas(pred.names), FLAGS.oks_nms)
      except ValueError as e:
        raise ValueError(f"--oks_nms: {e}") from None
    skipped = predict_boxes(pred, inputs, out_dir, names, plan, nms) + plan.problems
    what = "image file(s) or --boxes entries"
  else:
    skipped = predict_images(pred, inputs, out_dir, box, names)
    what = f"of {len(inputs.paths)} image file(s)"
  if skipped and not FLAGS.skip_unreadable:
    raise launch.Skipped(
      f"{len(skipped)} {what} not read (listed above; --skip_unreadable accepts that)"
    )


if __name__ == "__main__":
  launch.run(main)
