"""Grain input pipeline: dataset features → person-centred canvases → host batches.

Reads any random-access source of design.md's "Dataset features" dicts (a TFDS
`as_data_source(split)`, a `canvas_cache.CanvasCacheSource`, or a plain list in tests), crops
each example to the model's fixed canvas with ONE affine map, and batches per host.
Random augmentation is not done here: it runs on the device (`augment.py`).

Frames: points are (x, y), 0-based, pixel centres at integers. Every crop is a
similarity without rotation about the canvas centre c = ((W − 1)/2, (H − 1)/2):

    image point = p + (canvas point − c) / k,

with `p` the person centre in the image and `k` canvas pixels per image pixel,
chosen by the crop mode:

  * 'torso' (FLIC): p = the torso box centre, k = `image_scale` (default 0.5: the
    paper downsamples FLIC's 720×480 frames by 2 and feeds 320×240).
  * 'scale_normalized' (MPII): p = `center` (objpos), the 200·`scale` px person box
    times `box_scale` (default 1.25, the stacked-hourglass convention) fills
    min(H, W). No objpos shift.
  * 'unnormalized' (MPII, the paper's Table 4): p = `center`, a fixed global
    k = `image_scale` (default 1/3) for every image, so people keep the widely
    varying size they have in the photographs.
  * 'extent' (LSP, synthetic): like 'scale_normalized' with the builders'
    joint-extent `center` / `scale` (200·scale is already 1.25× the joint extent),
    `box_scale` default 1.0.
  * 'box' (COCO-style person boxes, `topdown`): like 'scale_normalized', but the
    box of 200·`scale` px height (its aspect fixed by the builder) times `box_scale`
    (default 1.25) fills the canvas height H.

A joint that lands outside the canvas (beyond [−0.5, W − 0.5] × [−0.5, H − 0.5])
becomes invalid for the loss and the metrics; invalid joints hold (0, 0).
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from PIL import Image

from heatpose_jax.data import flic_labels
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.data import orientation as orientation_lib

if TYPE_CHECKING:  # grain is imported where a stream is built: commands that never
  import grain  # read a batch (predict, evaluate from a cache) start ≈ 0.1 s sooner

CROP_MODES = ("torso", "scale_normalized", "unnormalized", "extent", "box")
_DEFAULT_IMAGE_SCALE = {"torso": 0.5, "unnormalized": 1 / 3}
_DEFAULT_BOX_SCALE = {"scale_normalized": 1.25, "extent": 1.0, "box": 1.25}


def crop_transform(
  features: dict[str, Any],
  *,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  image_scale: float | None = None,
  box_scale: float | None = None,
) -> np.ndarray:
  """The crop's `canvas_to_image` map for one example (module docstring).

  Args:
    features: one example's dataset features (uses `torso_box` for 'torso',
      `center` and `scale` otherwise).
    crop_mode: one of `CROP_MODES`.
    canvas_hw: (H, W) of the canvas.
    image_scale: canvas px per image px for 'torso' / 'unnormalized'.
    box_scale: person-box margin for 'scale_normalized' / 'extent' / 'box'.

  Returns:
    (2, 3) float64 affine, image (x, y) = M·(canvas x, y) + t.
  """
  h, w = canvas_hw
  if crop_mode == "torso":
    x1, y1, x2, y2 = np.asarray(features["torso_box"], np.float64)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    k = image_scale or _DEFAULT_IMAGE_SCALE[crop_mode]
  elif crop_mode == "unnormalized":
    centre = np.asarray(features["center"], np.float64)
    k = image_scale or _DEFAULT_IMAGE_SCALE[crop_mode]
  elif crop_mode in ("scale_normalized", "extent", "box"):
    centre = np.asarray(features["center"], np.float64)
    scale = float(features["scale"])
    if not scale > 0:
      raise ValueError(f"example {features.get('index')}: scale must be > 0, got {scale}")
    side = h if crop_mode == "box" else min(h, w)
    k = side / (200.0 * scale * (box_scale or _DEFAULT_BOX_SCALE[crop_mode]))
  else:
    raise ValueError(f"unknown crop_mode {crop_mode!r}; known: {CROP_MODES}")
  c = np.array([(w - 1) / 2, (h - 1) / 2])
  return np.concatenate([np.eye(2) / k, (centre - c / k)[:, None]], axis=1)


def _invert(m: np.ndarray) -> np.ndarray:
  inv = np.linalg.inv(m[:, :2])
  return np.concatenate([inv, -(inv @ m[:, 2])[:, None]], axis=1)


def _map_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def _resize_onto_canvas(im: Image.Image, m: np.ndarray, canvas_hw: tuple[int, int]) -> np.ndarray:
  """`decode_and_warp` for an axis-aligned map (x = a·u + tx, y = e·v + ty, a, e > 0).

  Pillow's separable `resize(box=...)` is ~10× faster than its generic affine
  `transform` and, when shrinking, its bilinear filter widens to the shrink factor
  (antialiased). It cannot read outside the image, so it fills the whole canvas
  pixels whose footprint lies inside the image; the rest stays black.
  """
  h, w = canvas_hw
  iw, ih = im.size
  a, e = m[0, 0], m[1, 1]
  # Edge coordinates (pixel i spans [i, i + 1]): image X = a·U + bx.
  bx, by = m[0, 2] + 0.5 - 0.5 * a, m[1, 2] + 0.5 - 0.5 * e
  eps = 1e-6
  u0, u1 = max(0, math.ceil(-bx / a - eps)), min(w, math.floor((iw - bx) / a + eps))
  v0, v1 = max(0, math.ceil(-by / e - eps)), min(h, math.floor((ih - by) / e + eps))
  canvas = np.zeros((h, w, 3), np.uint8)
  if u1 <= u0 or v1 <= v0:
    return canvas
  box = (
    min(max(a * u0 + bx, 0.0), iw),
    min(max(e * v0 + by, 0.0), ih),
    min(max(a * u1 + bx, 0.0), iw),
    min(max(e * v1 + by, 0.0), ih),
  )
  part = im.resize((u1 - u0, v1 - v0), Image.Resampling.BILINEAR, box=box)
  canvas[v0:v1, u0:u1] = np.asarray(part, np.uint8)
  return canvas


def to_rgb8(im: Image.Image) -> Image.Image:
  """An 8-bit RGB version of any PIL image: 16- and 32-bit grey images are scaled
  to 0–255 (PIL's `convert('RGB')` clips them to white), alpha is dropped."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I"):
    a = np.asarray(im).astype(np.float64)
    peak = 255.0 if im.mode == "I" and a.max() <= 255 else 65535.0
    im = Image.fromarray(np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8))
  elif im.mode == "F":
    a = np.asarray(im, np.float64)
    im = Image.fromarray(
      np.clip(np.round(a * (255.0 if a.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    )
  return im if im.mode == "RGB" else im.convert("RGB")


def decode_and_warp(
  data: bytes, canvas_to_image: np.ndarray, canvas_hw: tuple[int, int], *, use_draft: bool = True
) -> np.ndarray:
  """Decodes an encoded image and resamples it onto the canvas by one affine map.

  Canvas pixel (x, y) shows the image at `canvas_to_image`·(x, y, 1), bilinear.
  For a JPEG that shrinks by k ≥ 2, libjpeg decodes at 1/2, 1/4 or 1/8 size
  (`Image.draft`, the largest power of two ≤ k): much faster, and it averages
  whole pixel blocks. A draft pixel u covers original pixels d·u … d·u + d − 1,
  centre d·u + (d − 1)/2. Axis-aligned maps (every crop mode) use Pillow's
  antialiased `resize`, others its generic affine `transform`.

  The image is read as it is shown: its EXIF orientation is applied
  (`orientation.upright`, the rule of the builders and `Predictor`).

  Args:
    data: the encoded file (JPEG, PNG, ...).
    canvas_to_image: (2, 3) affine, canvas (x, y) → the upright image's (x, y).
    canvas_hw: (H, W).
    use_draft: allow reduced-size JPEG decoding.

  Returns:
    (H, W, 3) uint8 canvas; black outside the image.
  """
  h, w = canvas_hw
  m = np.asarray(canvas_to_image, np.float64)
  with Image.open(io.BytesIO(data)) as im:
    orientation = orientation_lib.exif_orientation(im)
    full = orientation_lib.upright_size(im)
    shrink = math.sqrt(abs(np.linalg.det(m[:, :2])))  # image px per canvas px
    d = 1.0
    if use_draft and im.format == "JPEG" and shrink >= 2:
      d = 2 ** min(3, int(math.log2(shrink) + 1e-9))  # det() rounds: 4 × 4 gives 15.999…
      width, height = im.size
      drafted = im.draft("RGB", (max(1, width // d), max(1, height // d)))
      d = width / drafted[1][2] if drafted is not None else 1.0
    im = to_rgb8(orientation_lib.upright(im, orientation))
    if d != 1:
      # Upright original (x, y) → draft: u = (x − (d − 1)/2 + s) / d, where s = 0 on
      # an axis the EXIF transpose keeps, and d·(draft size) − (full size) on one it
      # reverses (the draft's partial last block then comes first).
      rev = orientation_lib.TRANSPOSES[orientation][1] if orientation != 1 else (False, False)
      s = np.array([d * im.size[a] - full[a] if rev[a] else 0.0 for a in (0, 1)])
      m = np.concatenate([m[:, :2] / d, ((m[:, 2] - (d - 1) / 2 + s) / d)[:, None]], axis=1)
    if m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] > 0 and m[1, 1] > 0:
      return _resize_onto_canvas(im, m, canvas_hw)
    # PIL's transform maps output pixel edges (x + 0.5) to input edges.
    t = m[:, 2] + 0.5 - m[:, :2] @ np.array([0.5, 0.5])
    data6 = (m[0, 0], m[0, 1], t[0], m[1, 0], m[1, 1], t[1])
    out = im.transform((w, h), Image.Transform.AFFINE, data6, resample=Image.Resampling.BILINEAR)
    return np.asarray(out, np.uint8)


def crop_example(
  features: dict[str, Any],
  *,
  skeleton: joints_lib.Skeleton,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  image_scale: float | None = None,
  box_scale: float | None = None,
  use_draft: bool = True,
  flic_protocol: str = "",
  clean_labels: bool = False,
  label_noise: float = 0.0,
  noise_seed: int = 0,
) -> dict[str, np.ndarray]:
  """One dataset example → one example of the batch layout (design.md).

  Args:
    features: design.md's dataset features of one example (annotated order).
    skeleton: the dataset's joints; the output keeps `skeleton.model_indices`.
    crop_mode, canvas_hw, image_scale, box_scale: see `crop_transform`.
    use_draft: allow reduced-size JPEG decoding (see `decode_and_warp`).
    flic_protocol: FLIC only: relabel the joints and take the torso size as this
      protocol defines them (`flic_labels.protocol_labels`; 'modec' flips the arms
      of backward-facing people, as MODEC trained and scored), so that training
      labels and in-training evaluation follow the protocol; '' keeps the stored
      labels.
    clean_labels: use `joints_clean` where the dataset has it (synthetic people:
      the true joints, before any annotation noise): evaluation scores against them.
    label_noise: σ in canvas pixels of Gaussian annotation noise added to the
      valid joints, fixed per example (drawn from `(noise_seed, index)`, so every
      epoch sees the same noisy label, as with a human annotator).
    noise_seed: see `label_noise`.

  Returns:
    image (H, W, 3) uint8; joints (J, 2) float32 canvas (x, y); joints_valid and
    joints_visible (J,) float32, 0 for joints outside the canvas; head_size,
    torso_size () float32 canvas px; torso_box (4,) float32 canvas x1, y1, x2, y2;
    canvas_to_image (2, 3) float32; index () int32; and, when the features have
    them, distractor_joints (J, 2) float32 canvas and has_distractor () bool; a
    COCO-format build's annotation as stored (image frame, for OKS:
    `evaluators.oks`): image_id () int32 (−1 where it does not fit), bbox (4,)
    float32 x1, y1, x2, y2, area () float32 (0 where the file has none).
  """
  c2i = crop_transform(
    features, crop_mode=crop_mode, canvas_hw=canvas_hw, image_scale=image_scale, box_scale=box_scale
  )
  annotated = _annotated_labels(features, skeleton, flic_protocol, clean_labels)
  labels = _canvas_labels(features, annotated, c2i, skeleton, canvas_hw, label_noise, noise_seed)
  image = decode_and_warp(features["image"], c2i, canvas_hw, use_draft=use_draft)
  return {"image": image, **labels}


def _annotated_labels(
  features: dict[str, Any], skeleton: joints_lib.Skeleton, flic_protocol: str, clean_labels: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """The labels `crop_example` maps, in the image and the annotated order.

  Returns:
    joints (K, 2) float64 image (x, y), valid and visible (K,) bool, and the torso
    size in image px; relabelled as `flic_protocol` defines them when it is set.
  """
  key = "joints_clean" if clean_labels and "joints_clean" in features else "joints"
  annotated = np.asarray(features[key], np.float64)
  valid_ann = np.asarray(features["joints_valid"], bool)
  visible_ann = np.asarray(features["joints_visible"], bool)
  torso_px = float(features["torso_size"])
  if flic_protocol:
    if skeleton.name != "flic":
      raise ValueError(f"flic_protocol={flic_protocol!r} applies to FLIC, not {skeleton.name!r}")
    labels = flic_labels.protocol_labels(annotated[None], valid_ann[None], flic_protocol)
    annotated, torso_px = labels.joints[0], float(labels.torso[0])
    # FLIC has no occlusion flags: visible = valid, relabelled alike.
    valid_ann = visible_ann = labels.valid[0]
  return annotated, valid_ann, visible_ann, torso_px


def _canvas_labels(
  features: dict[str, Any],
  annotated: tuple[np.ndarray, np.ndarray, np.ndarray, float],
  c2i: np.ndarray,
  skeleton: joints_lib.Skeleton,
  canvas_hw: tuple[int, int],
  label_noise: float,
  noise_seed: int,
) -> dict[str, np.ndarray]:
  """`crop_example`'s outputs but the image: the `_annotated_labels` and the
  boxes mapped onto the canvas by the inverse of `c2i` (2, 3), in the model's
  joint order, with the label noise added."""
  h, w = canvas_hw
  annotated, valid_ann, visible_ann, torso_px = annotated
  i2c = _invert(c2i)
  k = float(i2c[0, 0])  # canvas px per image px
  model = skeleton.model_indices
  joints = _map_points(i2c, annotated[model])
  inside = (
    (joints[:, 0] >= -0.5)
    & (joints[:, 0] <= w - 0.5)
    & (joints[:, 1] >= -0.5)
    & (joints[:, 1] <= h - 0.5)
  )
  valid = valid_ann[model] & inside
  visible = visible_ann[model] & valid
  if label_noise > 0:
    rng = np.random.default_rng((int(noise_seed), int(features["index"])))
    joints = joints + rng.normal(0.0, label_noise, joints.shape)
  x1, y1, x2, y2 = np.asarray(features["torso_box"], np.float64)
  box = _map_points(i2c, np.array([[x1, y1], [x2, y2]]))
  out = {
    "joints": np.where(valid[:, None], joints, 0.0).astype(np.float32),
    "joints_valid": valid.astype(np.float32),
    "joints_visible": visible.astype(np.float32),
    "head_size": np.float32(float(features["head_size"]) * k),
    "torso_size": np.float32(torso_px * k),
    "torso_box": np.concatenate([box.min(0), box.max(0)]).astype(np.float32),
    "canvas_to_image": c2i.astype(np.float32),
    "index": np.int32(features["index"]),
  }
  if "distractor_joints" in features:
    d = _map_points(i2c, np.asarray(features["distractor_joints"])[model])
    out["distractor_joints"] = d.astype(np.float32)
    out["has_distractor"] = np.bool_(features["has_distractor"])
  if "image_id" in features and "bbox" in features:  # COCO-format builds
    image_id = int(features["image_id"])
    out["image_id"] = np.int32(image_id if abs(image_id) < 2**31 else -1)
    out["bbox"] = np.asarray(features["bbox"], np.float32)
    out["area"] = np.float32(features.get("area", 0.0))
  return out


@dataclasses.dataclass(frozen=True)
class Crop:
  """How a dataset example becomes a canvas: `crop_example`'s arguments as one
  value (hashable, picklable for grain's worker processes, recorded in a canvas
  cache's manifest). Calling it crops one example."""

  skeleton: joints_lib.Skeleton
  crop_mode: str
  canvas_hw: tuple[int, int]
  image_scale: float | None = None
  box_scale: float | None = None
  use_draft: bool = True
  flic_protocol: str = ""
  clean_labels: bool = False
  label_noise: float = 0.0
  noise_seed: int = 0

  def kwargs(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def __call__(self, features: dict[str, Any]) -> dict[str, np.ndarray]:
    return crop_example(features, **self.kwargs())

  def record(self) -> dict[str, Any]:
    """JSON-ready: what a canvas cache must have been built with to be reused."""
    out = self.kwargs()
    out["skeleton"] = self.skeleton.name
    out["model_joints"] = list(self.skeleton.model_joints)
    out["canvas_hw"] = list(self.canvas_hw)
    out["noise_seed"] = int(self.noise_seed) if self.label_noise else 0
    return out


def _stack(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


class _ReadBatch:
  """(indices (B,), real (B,)) → a batch: read + crop, or a cache's batched read."""

  def __init__(self, source, crop: Crop | None):
    self.source = source
    self.crop = crop

  def __call__(self, element):
    indices, real = element
    if self.crop is None:
      batch = self.source.read_batch(indices)
    else:
      batch = _stack([self.crop(self.source[int(i)]) for i in indices])
    # Padding rows never count in the loss or the metrics.
    batch["joints_valid"] = np.where(real[:, None], batch["joints_valid"], 0).astype(np.float32)
    batch["joints_visible"] = np.where(real[:, None], batch["joints_visible"], 0).astype(np.float32)
    batch["_mask"] = np.asarray(real, np.bool_)
    return batch


class _EpochOrder:
  """Example indices epoch after epoch: element i is example order_e[i mod n], e = i div n.

  order_e is a seeded permutation per epoch (`np.random.default_rng((seed, e))`),
  or the file order without shuffling: the stream is a pure function of (seed,
  position), so a resumed run reads exactly the batches the interrupted one would
  have, whatever the number of hosts. A cached permutation costs ~1 µs per index.
  """

  def __init__(self, n: int, *, shuffle: bool, seed: int, num_epochs: int | None):
    self.n, self.shuffle, self.seed, self.num_epochs = n, shuffle, seed, num_epochs
    self._cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return sys.maxsize if self.num_epochs is None else self.n * self.num_epochs

  def __getitem__(self, i: int) -> int:
    epoch, j = divmod(int(i), self.n)
    if not self.shuffle:
      return j
    order = self._cache.get(epoch)
    if order is None:
      order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
      self._cache = {epoch: order, **{k: v for k, v in self._cache.items() if k == epoch - 1}}
    return int(order[j])

  def __getstate__(self):
    return {**self.__dict__, "_cache": {}}


class _HostRows:
  """Rows [start, start + size) of a batch of (indices, real) pairs."""

  def __init__(self, start: int, size: int):
    self.start, self.size = start, size

  def __call__(self, element):
    indices, real = element
    return indices[self.start : self.start + self.size], real[self.start : self.start + self.size]


class _Fill:
  """The padding of a last partial batch: the stream's first elements, cyclically.

  Cyclic because a split can be shorter than its padding (3 examples in a batch of
  8 need 5 copies); slicing the stream itself would stop at its length.
  """

  def __init__(self, order, total: int, count: int):
    self.order, self.total, self.count = order, total, count

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, i: int) -> int:
    if not 0 <= i < self.count:
      raise IndexError(i)
    return self.order[i % self.total]


def _real(i: int) -> tuple[int, bool]:
  return i, True


def _padding(i: int) -> tuple[int, bool]:
  return i, False


def make_dataset(
  source: Sequence[dict[str, Any]],
  *,
  crop: Crop,
  global_batch_size: int,
  shuffle: bool,
  seed: int = 0,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  process_index: int | None = None,
  process_count: int | None = None,
  worker_count: int = 0,
  num_threads: int = 2,
  prefetch_batches: int = 4,
  start_batch: int = 0,
) -> grain.IterDataset:
  """The host's stream of batches in design.md's batch layout.

  Grain pads, shards and batches example *indices* (a seeded permutation per
  epoch when shuffling, see `_EpochOrder`); each batch of indices is then read
  and cropped in one go (a `canvas_cache.CanvasCacheSource` reads its arrays with one copy
  per batch, which is what makes the cached path fast). Host p of P takes rows
  [p·B/P, (p+1)·B/P) of each global batch of B (`_host_block`). With `num_epochs`
  set and `drop_remainder=False` (evaluation: `shuffle=False, num_epochs=1`), the
  stream is padded to whole global batches with copies marked `_mask=False` and
  `joints_valid = joints_visible = 0` (`_index_stream`), so every example appears
  exactly once with `_mask=True`; otherwise a partial last global batch is dropped.

  Args:
    source: random-access dataset features (TFDS data source, list, ...) or a
      `canvas_cache.CanvasCacheSource` (already cropped: only batching runs on the host).
    crop: how each example becomes a canvas (checked against a cache's manifest).
    global_batch_size: examples per step over all hosts.
    shuffle: shuffle the examples (training).
    seed: shuffle seed.
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: drop (True) or pad (False) a partial last global batch.
    process_index, process_count: this host and the number of hosts (default
      `jax.process_index()` / `jax.process_count()`).
    worker_count: grain worker processes (0: threads in this process only).
    num_threads: threads per process preparing batches concurrently (PIL and
      numpy copies release the GIL).
    prefetch_batches: batches prepared ahead per process.
    start_batch: skip the first global batches (resuming at a step: the stream
      is a pure function of the seed and the batch number).

  Returns:
    A grain `IterDataset` of dicts of (global_batch_size / process_count, ...)
    numpy arrays. Close its iterator after use when `worker_count > 0`.
  """
  first_row, local_batch = _host_block(global_batch_size, process_index, process_count)
  reader = _batch_reader(source, crop)
  real = _index_stream(len(source), global_batch_size, shuffle, seed, num_epochs, drop_remainder)
  ds = real.batch(global_batch_size, drop_remainder=True)
  ds = ds.map(_HostRows(first_row, local_batch))
  if start_batch:
    ds = ds[start_batch:]
  return _iterate(ds.map(reader), num_threads, prefetch_batches, worker_count)


def _host_block(
  global_batch_size: int, process_index: int | None, process_count: int | None
) -> tuple[int, int]:
  """(first row, number of rows) of this host's block of each global batch.

  Host p of P takes rows [p·B/P, (p+1)·B/P) of each global batch of B: the global
  array that `sharding.to_global_array` assembles then has the rows in the same order as a
  one-host run, so per-row randomness (augmentation, dropout) and the results are
  the same whatever the number of hosts. None: `jax.process_index()` /
  `jax.process_count()`.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} not divisible by {process_count} hosts")
  local_batch = global_batch_size // process_count
  return process_index * local_batch, local_batch


def _batch_reader(source, crop: Crop) -> _ReadBatch:
  """Reads and crops a batch of examples of `source`, or reads a canvas cache's
  (checked against `crop`); ValueError for an empty source."""
  if hasattr(source, "read_batch"):  # a `canvas_cache.CanvasCacheSource`: already cropped
    source.check(crop)
    reader = _ReadBatch(source, None)
  else:
    reader = _ReadBatch(source, crop)
  if not len(source):
    raise ValueError("make_dataset: the source has no examples")
  return reader


def _index_stream(
  n: int,
  global_batch_size: int,
  shuffle: bool,
  seed: int,
  num_epochs: int | None,
  drop_remainder: bool,
) -> grain.MapDataset:
  """(example index, real) pairs over `n` examples in reading order (`_EpochOrder`).

  With `num_epochs` set, a partial last global batch is dropped (`drop_remainder`)
  or padded to a whole one with copies of the first examples (cyclically: any
  split of ≥ 1 example fills a batch of any size) that are not real: `_ReadBatch`
  marks them `_mask=False` and `joints_valid = joints_visible = 0`. An endless
  stream has no last batch.
  """
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"make_dataset: num_epochs={num_epochs}; must be >= 1 (or None: forever)")
  import grain

  order = _EpochOrder(n, shuffle=shuffle, seed=seed, num_epochs=num_epochs)
  real = grain.MapDataset.source(order).map(_real)
  if num_epochs is not None:
    total = len(order)
    if drop_remainder:
      real = real[: total // global_batch_size * global_batch_size]
    elif total % global_batch_size:
      # Any number of copies, even more than the split has (a split shorter than a batch).
      fill = grain.MapDataset.source(_Fill(order, total, -total % global_batch_size))
      real = grain.MapDataset.concatenate([real, fill.map(_padding)])
  return real


def _iterate(
  ds: grain.MapDataset, num_threads: int, prefetch_batches: int, worker_count: int
) -> grain.IterDataset:
  """`ds` read by `num_threads` threads, `prefetch_batches` ahead, in
  `worker_count` grain worker processes when > 0."""
  import grain

  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
  it = ds.to_iter_dataset(read)
  if worker_count > 0:
    # Grain's worker processes read absl flags: outside an absl app (tests,
    # notebooks) mark absl's flag values parsed first (`FLAGS.mark_as_parsed()`).
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=worker_count), worker_init_fn=_worker_init
    )
  return it


def _worker_init(worker_index: int, worker_count: int) -> None:
  """Runs first in each grain worker process.

  A terminal's Ctrl-C reaches every process of the group: the workers ignore it
  (the main process saves, closes the iterator and so stops them; no
  KeyboardInterrupt tracebacks from the workers), and on Linux they end with the
  main process however it ends (a second Ctrl-C, SIGKILL) instead of waiting forever.
  """
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if not sys.platform.startswith("linux"):
    return
  try:
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
  except (OSError, AttributeError):
    return
  parent = multiprocessing.parent_process()
  if parent is not None and os.getppid() != parent.pid:  # it ended before prctl
    os._exit(0)


def close(batches) -> None:
  """Ends a batch stream's reads (a grain iterator's `close`; nothing for others)."""
  end = getattr(batches, "close", None)
  if end:
    end()
