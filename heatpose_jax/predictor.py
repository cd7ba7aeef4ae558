"""`Predictor`: joints of photographs from a trained run, in one call.

    from heatpose_jax import Predictor
    predictor = Predictor.from_workdir("workdir/quickstart")
    result = predictor("photo.jpg")        # or a PIL image, an (H, W, 3) uint8 array, a list
    result["joints"], result["scores"], result["names"]
    overlay = predictor.draw("photo.jpg", result)
    poses = predictor("photo.jpg", boxes=[(x1, y1, x2, y2), ...])   # top-down: one per box

`from_workdir` reads the config saved with the run and restores the parameters
only (an abstract tree from `jax.eval_shape`: no init is compiled). Each image
is letterboxed into the model's input canvas (at every zoom of `scales`), run
through the one prediction path (`inference.predict`), and the joints are mapped
back to the image's own pixels: (x, y), 0-based, pixel centres at integers.

With `boxes` (person boxes x1, y1, x2, y2 in the image's pixels, e.g. a detector's)
each box is cropped as the dataset's builder crops its people (`topdown`: the box
widened to the dataset's aspect, `box_scale` margin, crop mode 'box') and gives one
pose: top-down prediction, as COCO-style benchmarks score it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image

from heatpose_jax import from_config
from heatpose_jax.data import input_pipeline, orientation, topdown
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import visualize
from heatpose_jax.model import image_ops, inference
from heatpose_jax.mrf import spatial_training
from heatpose_jax.training import checkpoints


class ImageError(ValueError):
  """An input that is not a usable image (the message names it)."""


def load_image(x, *, name: str = "") -> np.ndarray:
  """A path, PIL image or array → `(H, W, 3)` uint8 RGB.

  EXIF orientation is applied (phone photos); 16-bit images are scaled to 8 bits
  (not clipped); grey and alpha images become RGB.

  Raises:
    ImageError: unreadable file, a decompression bomb, or a bad array.
  """
  label = name or (os.fspath(x) if isinstance(x, str | os.PathLike) else type(x).__name__)
  if isinstance(x, np.ndarray):
    a = x
    if a.ndim == 2:
      a = np.repeat(a[..., None], 3, -1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or min(a.shape[:2]) < 1:
      raise ImageError(f"{label}: expected an (H, W, 3) uint8 array, got shape {a.shape}")
    if a.dtype != np.uint8:
      if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
      elif np.issubdtype(a.dtype, np.floating):
        # Floats are [0, 1] intensities; anything else ([-1, 1], 0-255, NaN) would
        # wrap around or saturate in uint8: refused, with the range found.
        if not np.isfinite(a).all():
          raise ImageError(f"{label}: float array with NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
          raise ImageError(
            f"{label}: float values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
            "(or a uint8 array 0-255)"
          )
        a = np.round(a * 255).astype(np.uint8)
      else:
        raise ImageError(f"{label}: array dtype {a.dtype}; expected uint8 (or floats in [0, 1])")
    return np.ascontiguousarray(a[..., :3])
  if isinstance(x, str | os.PathLike):
    try:
      with Image.open(x) as im:
        im.load()
        return load_image(im, name=label)
    except Image.DecompressionBombError as e:
      raise ImageError(f"{label}: refused, too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
      raise ImageError(f"{label}: not a readable image ({e})") from None
  if isinstance(x, Image.Image):
    if min(x.size) < 1:
      raise ImageError(f"{label}: empty image {x.size}")
    return np.asarray(input_pipeline.to_rgb8(orientation.upright(x)))
  raise ImageError(f"{label}: expected a path, a PIL image or an (H, W, 3) uint8 array")


class Predictor:
  """A trained cascade that maps photographs to joints.

  Args:
    model: the cascade.
    params: its parameters.
    skeleton: the joints it predicts.
    input_hw: (H, W) of its input canvas.
    scales: zooms of multi-scale inference (paper §5; must include 1.0).
    mrf: a fitted spatial model; used when a call gives `torso_box`.
    batch_size: images per device call for lists.
    step: the checkpoint step (reported in results).
    box_scale: the margin of a person box (`boxes`): the box, widened to
      `box_aspect`, times this fills the canvas height (crop mode 'box').
    box_aspect: width / height a person box is widened to (0: the canvas's).
    flip_test: also run each canvas mirrored and average the two estimates
      (`inference.predict`'s `flip_perm`; 2× the compute).
    fuse_coarse: the cascade decodes its fine maps weighted by the coarse maps
      (`inference.predict`'s; docs/model.md, "Fusing the coarse maps").
  """

  def __init__(
    self,
    model,
    params,
    *,
    skeleton: joints_lib.Skeleton,
    input_hw: tuple[int, int],
    scales: Sequence[float] = (1.0,),
    mrf: spatial_training.FittedMRF | None = None,
    batch_size: int = 8,
    step: int | None = None,
    box_scale: float = 1.25,
    box_aspect: float = 0.0,
    flip_test: bool = False,
    fuse_coarse: bool = False,
  ):
    self.model, self.params, self.skeleton = model, params, skeleton
    self.flip_test, self.fuse_coarse = bool(flip_test), bool(fuse_coarse)
    self.box_scale, self.box_aspect = float(box_scale), float(box_aspect)
    self.input_hw = tuple(int(v) for v in input_hw)
    self.scales = inference.check_scales(scales)
    self.mrf, self.step = mrf, step
    # Why a workdir's spatial model could not be loaded (said when torso_box asks for it).
    self.mrf_error: str | None = None
    self.batch_size = max(1, int(batch_size))
    self.names = tuple(skeleton.model_joints)

  @classmethod
  def from_workdir(
    cls,
    workdir: str,
    *,
    step: int | None = None,
    config=None,
    scales: Sequence[float] = (1.0,),
    spatial_model: bool = True,
    batch_size: int = 8,
    flip_test: bool = False,
    fuse_coarse: bool | None = None,
  ) -> Predictor:
    """The predictor of a training run's checkpoint.

    Args:
      workdir: the run's directory (config.json, checkpoints/).
      step: a checkpoint step (default the newest usable one).
      config: the run's config (default: the workdir's config.json). A config
        whose model differs from the checkpoint's is a one-line ValueError
        naming both shapes. The dataset's spec (joints, flip pairs, limbs, box
        crop) is the run's own `dataset_spec.json` where it has one
        (`from_config.use_run_spec`: a COCO-format run needs no data dir), else
        the data dir's build, else the registered one.
      scales, batch_size, flip_test: see the class.
      fuse_coarse: see the class; None: the run's `config.eval.fuse_coarse`.
      spatial_model: load the workdir's fitted MRF (used with `torso_box`).
    """
    config = from_config.load_run_config(workdir) if config is None else config
    from_config.use_run_spec(workdir, config)
    from_config.check(config)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    params, step = checkpoints.restore_params(
      workdir, from_config.abstract_params(config, mesh), step
    )
    mrf, mrf_error = None, None
    if spatial_model:
      # A damaged spatial model only matters to a call that asks for it (torso_box).
      try:
        mrf = spatial_training.load(workdir)
      except ValueError as e:
        mrf_error = str(e)
    out = cls(
      from_config.model(config),
      params,
      skeleton=from_config.skeleton(config),
      input_hw=tuple(config.input_hw),
      scales=scales,
      mrf=mrf,
      batch_size=batch_size,
      step=step,
      flip_test=flip_test,
      fuse_coarse=config.eval.get("fuse_coarse", False) if fuse_coarse is None else fuse_coarse,
      **box_crop(config),
    )
    out.mrf_error = mrf_error
    return out

  @property
  def _flip_perm(self) -> tuple[int, ...] | None:
    if not self.flip_test:
      return None
    return tuple(int(i) for i in self.skeleton.flip_permutation)

  @property
  def _plain(self):
    return _predict_program(
      self.model, tuple(self.scales), flip_perm=self._flip_perm, fuse_coarse=self.fuse_coarse
    )

  @property
  def _selected(self):
    return _predict_program(
      self.model,
      tuple(self.scales),
      spatial_training.mrf_selector(self.mrf.spec),
      flip_perm=self._flip_perm,
      fuse_coarse=self.fuse_coarse,
    )

  def canvases(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(S, H, W, 3)` uint8 canvases at every scale and the scale-1 `canvas_to_image`."""
    out, c2i = [], None
    for s in self.scales:
      canvas, m = inference.letterbox(image, self.input_hw, s)
      out.append(canvas)
      if s == 1.0:
        c2i = m
    return np.stack(out), c2i

  def __call__(self, images, *, torso_box: Sequence[float] | None = None, boxes=None):
    """Joints of one image or a list of images.

    Args:
      images: a path, a PIL image, an `(H, W, 3)` uint8 array, or a list of those.
      torso_box: x1, y1, x2, y2 in image pixels of the person to pick (the same
        for every image of a list); needs a fitted spatial model (`mrf`).
      boxes: person boxes x1, y1, x2, y2 in the image's pixels: one pose per box
        (top-down, module docstring); for a list of images, one list per image.

    Returns:
      For one image a dict: `joints` `(J, 2)` float32 (x, y) in the image's
      pixels, `scores` `(J,)` in [0, 1] (the coarse heat-map's value there:
      ≈ 1 confident, ≈ 0 not found), `names` (J joint names), `image_hw`,
      `step`; a list of such dicts for a list. With `boxes`: a list of such
      dicts (each with its `box`) per image.

    Raises:
      ImageError: an input is not a usable image (the message names it).
      ValueError: `torso_box` without a spatial model, or a box that is not
        x1 < x2, y1 < y2 finite, or that does not fit an image
        (`check_torso_box`, `check_person_box`); `boxes` with `torso_box`.
    """
    if boxes is not None:
      if torso_box is not None:
        raise ValueError("give torso_box or boxes, not both")
      return self._call_boxes(images, boxes)
    single = not isinstance(images, list | tuple)
    items = [images] if single else list(images)
    box = None if torso_box is None else torso_box_array(torso_box)
    results = [None] * len(items)
    for lo in range(0, len(items), self.batch_size):
      chunk = [load_image(x) for x in items[lo : lo + self.batch_size]]
      if box is not None:
        for x, im in zip(items[lo : lo + self.batch_size], chunk, strict=True):
          check_torso_box(box, im.shape[:2], _label(x))
        if self.mrf is None:
          raise ValueError(
            self.mrf_error
            or "torso_box needs a fitted spatial model (config.spatial_model.enabled)"
          )
      for i, r in enumerate(self._predict(chunk, box)):
        results[lo + i] = r
    return results[0] if single else results

  def _call_boxes(self, images, boxes):
    single = not isinstance(images, list | tuple)
    items = [images] if single else list(images)
    per_image = [boxes] if single else list(boxes)
    if len(per_image) != len(items):
      raise ValueError(f"boxes: {len(per_image)} lists of boxes for {len(items)} images")
    out = []
    for x, image_boxes in zip(items, per_image, strict=True):
      image = load_image(x)
      checked = [check_person_box(b, image.shape[:2], _label(x)) for b in image_boxes]
      out.append(self._predict_boxes(image, checked))
    return out[0] if single else out

  def box_canvases(self, encoded: bytes, box) -> tuple[np.ndarray, np.ndarray]:
    """`(S, H, W, 3)` canvases of one person box at every scale and the scale-1
    `canvas_to_image` (`encoded`: the image as `topdown.encode` makes it)."""
    h, w = self.input_hw
    center, scale = topdown.box_center_scale(box, self.box_aspect or w / h)
    c2i = input_pipeline.crop_transform(
      {"center": center, "scale": scale},
      crop_mode="box",
      canvas_hw=self.input_hw,
      box_scale=self.box_scale,
    )
    zoomed = [topdown.zoom_about_centre(c2i, self.input_hw, s) for s in self.scales]
    canvases = [input_pipeline.decode_and_warp(encoded, m, self.input_hw) for m in zoomed]
    return np.stack(canvases), c2i

  def _predict_boxes(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[dict]:
    encoded = topdown.encode(image) if boxes else b""
    prepared = [self.box_canvases(encoded, b) for b in boxes]
    results = []
    for lo in range(0, len(prepared), self.batch_size):
      chunk = prepared[lo : lo + self.batch_size]
      results += self._run(chunk, [image.shape[:2]] * len(chunk), None)
    for r, b in zip(results, boxes, strict=True):
      r["box"] = b.astype(np.float32)
    return results

  def _predict(self, images: list[np.ndarray], torso_box) -> list[dict]:
    return self._run(
      [self.canvases(im) for im in images], [im.shape[:2] for im in images], torso_box
    )

  def _run(self, prepared, image_hws, torso_box) -> list[dict]:
    """Predicts `prepared` [(canvases (S, H, W, 3), canvas_to_image)] → result dicts."""
    n = len(prepared)
    # A fixed batch shape: one compiled function for every list.
    pad = 1 if n == 1 else self.batch_size
    canvases = np.stack([c for c, _ in prepared] + [prepared[0][0]] * (pad - n), axis=1)
    c2i = np.stack([m for _, m in prepared])
    if torso_box is None:
      out = self._plain(self.params, canvases)
      xy, scores = out["cascade"], out["scores"]
    else:
      box = torso_box_array(torso_box)
      boxes = np.stack([image_box_to_canvas(box, m) for m in c2i])
      boxes = np.concatenate([boxes, np.repeat(boxes[:1], pad - n, 0)])
      out = self._selected(self.params, canvases, selector_params=self.mrf.params, torso_box=boxes)
      xy, scores = out["cascade_mrf"], out["scores_mrf"]
    xy, scores = np.asarray(xy)[:n], np.asarray(scores)[:n]
    image_xy = inference.canvas_to_image_points(xy, c2i)
    return [
      {
        "joints": image_xy[i].astype(np.float32),
        "scores": scores[i].astype(np.float32),
        "names": self.names,
        "image_hw": tuple(int(v) for v in image_hws[i]),
        "step": self.step,
      }
      for i in range(n)
    ]

  def export(self, *, platforms: Sequence[str] | None = None):
    """The whole predictor (parameters included) as a `jax.export.Exported`.

    The exported function takes uint8 canvases `(B, H, W, 3)` at the model's
    input size (B symbolic: any batch) and returns `{"joints": (B, J, 2)
    float32 (x, y) in canvas pixels, "scores": (B, J) in [0, 1]}`: single scale,
    no selector, the flip test and `fuse_coarse` as the predictor's. Letterbox
    photographs into canvases with `inference.letterbox` (it also returns the
    `canvas_to_image` map back to the photograph).
    `exported.serialize()` gives bytes that `jax.export.deserialize` reloads
    without this code (TF Serving-style deployment, or any JAX process).

    Args:
      platforms: e.g. ('cpu', 'cuda'); default the current backend.
    """
    import jax.numpy as jnp

    (batch,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, *self.input_hw, 3), jnp.uint8)
    model, params, flip_perm, fuse = self.model, self.params, self._flip_perm, self.fuse_coarse

    def serve(images):
      out = inference.predict(model, params, images, flip_perm=flip_perm, fuse_coarse=fuse)
      return {"joints": out["cascade"].astype(jnp.float32), "scores": out["scores"]}

    if platforms is None:
      return jax.export.export(jax.jit(serve))(spec)
    with image_ops.portable_lowering():
      return jax.export.export(jax.jit(serve), platforms=platforms)(spec)

  def draw(self, image, result, *, title: str = "", min_side: int = 384):
    """The overlay of `result` (one result dict, or a list: the poses of `boxes`) on
    `image` (path, PIL or array): `(H', W', 3)` uint8."""
    image = load_image(image)
    results = list(result) if isinstance(result, list | tuple) else [result]
    if not results:
      return visualize.draw(image, None, self.skeleton, title=title, min_side=min_side)
    out = visualize.draw(
      image,
      results[0]["joints"],
      self.skeleton,
      scores=results[0].get("scores"),
      title=title,
      min_side=min_side,
    )
    k = out.shape[0] // image.shape[0]  # `visualize.enlarge`'s integer factor
    for r in results[1:]:
      xy = np.asarray(r["joints"], np.float64) * k + (k - 1) / 2
      out = visualize.draw(out, xy, self.skeleton, scores=r.get("scores"), min_side=0, legend=False)
    return out


def _label(x) -> str:
  return os.fspath(x) if isinstance(x, str | os.PathLike) else "the image"


def torso_box_array(torso_box) -> np.ndarray:
  """`torso_box` as a float64 `(4,)` x1, y1, x2, y2 with x1 < x2, y1 < y2, all finite.

  Raises:
    ValueError: anything else (one line, naming the box).
  """
  try:
    box = np.asarray(torso_box, np.float64).reshape(-1)
  except (TypeError, ValueError):
    box = np.zeros(0)
  if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(
      f"torso_box must be 4 finite numbers x1, y1, x2, y2 with x2 > x1, y2 > y1; got {torso_box}"
    )
  return box


# A torso box may run past the image's edges (a person cut by the frame), but not
# be larger than this many times the image, nor miss the image entirely.
MAX_TORSO_BOX_FACTOR = 2.0


def check_person_box(box, image_hw: Sequence[int], label: str = "the image") -> np.ndarray:
  """A person box x1, y1, x2, y2 (image pixels) as float64 `(4,)`, checked: finite, x2 > x1,
  y2 > y1, overlapping the image (it may run past its edges).

  Raises:
    ValueError: one line naming the box, the image and what is wrong.
  """
  try:
    b = np.asarray(box, np.float64).reshape(-1)
  except (TypeError, ValueError):
    b = np.zeros(0)
  h, w = (int(v) for v in image_hw)
  where = f"box {box} for {label} ({w}×{h} px)"
  if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
    raise ValueError(f"{where}: must be 4 finite numbers x1, y1, x2, y2 with x2 > x1, y2 > y1")
  if b[2] <= -0.5 or b[3] <= -0.5 or b[0] >= w - 0.5 or b[1] >= h - 0.5:
    raise ValueError(f"{where}: lies outside the image")
  return b


def box_crop(config) -> dict:
  """`Predictor`'s person-box crop for a run: {box_scale: `config.box_scale`, else the
  dataset's margin, else 1.25; box_aspect: the dataset's box aspect (0: the canvas's)}."""
  spec = from_config.dataset_spec(config)
  return {"box_scale": config.box_scale or spec.box_scale or 1.25, "box_aspect": spec.box_aspect}


def check_torso_box(torso_box, image_hw: Sequence[int], label: str = "the image") -> None:
  """Refuses a torso box (image pixels) that cannot be a torso in an image of `image_hw`.

  The box must overlap the image (pixels span [-0.5, W - 0.5] × [-0.5, H - 0.5])
  and be at most `MAX_TORSO_BOX_FACTOR` times its width and height; a box
  thousands of pixels away or (0, 0, 1e30, 1e30) would make the spatial model
  pick from nothing.

  Raises:
    ValueError: one line naming the box, the image and what is wrong.
  """
  box = torso_box_array(torso_box)
  h, w = (int(v) for v in image_hw)
  x1, y1, x2, y2 = box
  where = f"torso_box {', '.join(f'{v:g}' for v in box)} for {label} ({w}×{h} px)"
  if x2 <= -0.5 or y2 <= -0.5 or x1 >= w - 0.5 or y1 >= h - 0.5:
    raise ValueError(f"{where}: lies outside the image")
  f = MAX_TORSO_BOX_FACTOR
  if x2 - x1 > f * w or y2 - y1 > f * h:
    raise ValueError(
      f"{where}: is {x2 - x1:g}×{y2 - y1:g} px, more than {f:g}× the image; not a torso box"
    )


def image_box_to_canvas(box: Sequence[float], canvas_to_image: np.ndarray) -> np.ndarray:
  """An image-pixel box x1, y1, x2, y2 → the canvas box (the `(2, 3)` map is a similarity)."""
  a = np.asarray(canvas_to_image, np.float64)
  inv = np.linalg.inv(a[:, :2])
  x1, y1, x2, y2 = (float(v) for v in box)
  corners = (np.array([[x1, y1], [x2, y2]]) - a[:, 2]) @ inv.T
  return np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _predict_program(
  model, scales: tuple[float, ...], selector=None, flip_perm=None, fuse_coarse=False
):
  """`inference.predict` of `model` jitted, with the MRF `selector` (its estimates
  only) or without, with the flip test (`flip_perm`) or without, `fuse_coarse`. Cached:
  Predictors of one model (`from_config.model` gives equal configs one module)
  share the traced and compiled program."""
  kw = {"flip_perm": flip_perm, "fuse_coarse": fuse_coarse}
  if selector is not None:
    kw.update(selector=selector, plain=False)
  return jax.jit(
    functools.partial(inference.predict, model, scales=scales, **kw),
    compiler_options=inference.compiler_options(),
  )
