"""The MRF spatial model (`spatial_model`) on top of a trained cascade (paper §3.3).

  * `fit_from_cascade`: the trained coarse model's heat-maps (inference mode) on
    training batches → `spatial_model.make_spatial_batch` (with the batch's
    `torso_box` as the observed torso node) → `spatial_model.fit_spatial_model`.
  * `save` / `load`: one atomic `.npz` in `WORKDIR/spatial_model/mrf.npz` holding the
    parameters and, as JSON, the `MRFSpec` (graph, heat-map size, stride, torso
    node) and the fit's record (the cascade step it was fitted on, steps, loss).
  * `predict_with_spatial_model`: coarse heat-maps → MRF log-marginals given the
    torso box → their argmax ("coarse+MRF", key `coarse_mrf`) → the cascade's fine
    stage refines THAT location (`model.apply(..., coarse_xy=...)`) ("cascade+MRF",
    key `cascade_mrf`), next to the plain `coarse` and `cascade` estimates.
  * `make_predict_fn`: the same as a drop-in for `evaluation.make_predict_fn`.
  * `make_photo_predictor` / `predict_image`: `inference.make_predictor` with the
    MRF, for photographs with a torso box given in image pixels.

Frames (docs/design.md): points are (x, y) canvas (input) pixels, 0-based, pixel
centres at integers; heat-maps NHWC `(B, h, w, J)` at stride s.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import codec, inference, input_pipeline
from heatpose_jax import spatial_model as sm
from heatpose_jax.joints import Skeleton

SAVE_DIR = "spatial_model"
SAVE_FILE = "mrf.npz"
PREDICTION_KEYS = ("coarse_mrf", "cascade_mrf")


@dataclasses.dataclass(frozen=True)
class MRFSpec:
  """Everything but the parameters that defines a fitted spatial model.

  Attributes:
    num_joints: J; node J is the torso.
    edges: (src, dst) node pairs (`spatial_model.default_edges`).
    heatmap_hw: (h, w) of the coarse heat-maps.
    stride: heat-map stride s (the coarse model's pooling factor).
    torso_sigma, torso_box_sigma_fraction, torso_mode: the torso node's map
      (`spatial_model.torso_heatmap`).
    target_sigma: σ (heat-map px) of the training targets.
  """

  num_joints: int
  edges: tuple[tuple[int, int], ...]
  heatmap_hw: tuple[int, int]
  stride: int
  torso_sigma: float = 1.5
  torso_box_sigma_fraction: float = 0.0
  torso_mode: str = "gaussian"
  target_sigma: float = 1.0

  @classmethod
  def for_skeleton(
    cls,
    skeleton: Skeleton,
    *,
    stride: int,
    heatmap_hw: tuple[int, int],
    edges: Sequence[tuple[int, int]] | None = None,
    **kwargs,
  ) -> MRFSpec:
    """The paper's tree (`default_edges`: limbs both ways + torso → every joint) by default."""
    edges = sm.default_edges(skeleton) if edges is None else edges
    return cls(
      num_joints=skeleton.num_joints,
      edges=tuple((int(a), int(b)) for a, b in edges),
      heatmap_hw=(int(heatmap_hw[0]), int(heatmap_hw[1])),
      stride=int(stride),
      **kwargs,
    )

  def module(self) -> sm.SpatialModel:
    return sm.SpatialModel(num_joints=self.num_joints, edges=self.edges, heatmap_hw=self.heatmap_hw)

  def torso_map(self, torso_box: jax.Array) -> jax.Array:
    """`(B, 4)` canvas x1, y1, x2, y2 → the torso node's `(B, h, w)` map."""
    return sm.torso_heatmap(
      torso_box,
      self.heatmap_hw,
      self.stride,
      self.torso_sigma,
      box_sigma_fraction=self.torso_box_sigma_fraction,
      mode=self.torso_mode,
    )

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> MRFSpec:
    d = dict(d)
    d["edges"] = tuple((int(a), int(b)) for a, b in d["edges"])
    d["heatmap_hw"] = tuple(int(v) for v in d["heatmap_hw"])
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class FittedMRF:
  """A spatial model ready to use: its spec, parameters and fit record."""

  spec: MRFSpec
  params: Any
  info: dict = dataclasses.field(default_factory=dict)


def heatmap_hw_for(canvas_hw: Sequence[int], stride: int) -> tuple[int, int]:
  """(h, w) of the coarse heat-maps of a `(H, W)` canvas: ceil(H / s), ceil(W / s)."""
  return (-(-int(canvas_hw[0]) // stride), -(-int(canvas_hw[1]) // stride))


# ------------------------------------------------------------------------------------
# Fitting.


@functools.lru_cache(maxsize=16)
def make_spatial_batch_fn(model, spec: MRFSpec) -> Callable[[Any, dict], dict]:
  """A jitted `(cascade params, pipeline batch) -> spatial-model batch`.

  The coarse model runs in inference mode (no dropout) on `batch['image']`
  (uint8); the torso node comes from `batch['torso_box']`, the targets from
  `batch['joints']`, padding rows (`_mask` False) are not counted. Cached: equal
  (model, spec) pairs (Flax modules compare by value) share one compiled function.
  """

  @jax.jit
  def prep(params, batch):
    images = batch["image"].astype(jnp.float32) / 255.0
    heat = model.apply({"params": params}, images, train=False, method=model.coarse_heatmaps)
    if tuple(heat.shape[1:3]) != tuple(spec.heatmap_hw) or heat.shape[-1] != spec.num_joints:
      raise ValueError(
        f"coarse heat-maps {heat.shape} do not match the spatial model's "
        f"heatmap_hw={spec.heatmap_hw}, num_joints={spec.num_joints}"
      )
    return sm.make_spatial_batch(
      heat,
      batch["torso_box"],
      batch["joints"],
      batch["joints_valid"],
      spec.stride,
      target_sigma=spec.target_sigma,
      torso_sigma=spec.torso_sigma,
      torso_box_sigma_fraction=spec.torso_box_sigma_fraction,
      torso_mode=spec.torso_mode,
      mask=batch.get("_mask"),
    )

  return prep


def fit_from_cascade(
  model,
  params: Any,
  batches: Iterable[dict[str, np.ndarray]],
  *,
  steps: int,
  learning_rate: float,
  spec: MRFSpec | None = None,
  skeleton: Skeleton | None = None,
  stride: int | None = None,
  heatmap_hw: tuple[int, int] | None = None,
  mesh: Mesh | None = None,
  init_params: Any = None,
  log_every: int = 0,
  log_fn: Callable[[int, float], None] | None = None,
) -> Any:
  """Fits the spatial model to a trained cascade's coarse heat-maps.

  Args:
    model: the `Cascade` (or `StandardCascade`); only its coarse model runs.
    params: the cascade's parameters.
    batches: host batches in design.md's layout (`input_pipeline.make_dataset`):
      `image`, `joints`, `joints_valid`, `torso_box` (canvas), optional `_mask`;
      at least `steps` of them. Used as they come (no augmentation here).
    steps: optimizer steps (≥ 1).
    learning_rate: Adam's learning rate.
    spec: the spatial model; default `MRFSpec.for_skeleton(skeleton, stride=,
      heatmap_hw=)` (the paper's tree, default torso node).
    skeleton, stride, heatmap_hw: used when `spec` is None.
    mesh: place each batch on this mesh (`to_global_array`: every host passes
      its own rows); None: plain single-process arrays.
    init_params: start from these MRF parameters (default: the pass-through init).
    log_every, log_fn: see `spatial_model.fit_spatial_model`.

  Returns:
    The spatial model's parameters (`{'kernels', 'biases'}`).
  """
  if spec is None:
    if skeleton is None or stride is None or heatmap_hw is None:
      raise ValueError("fit_from_cascade needs spec=, or skeleton=, stride= and heatmap_hw=")
    spec = MRFSpec.for_skeleton(skeleton, stride=stride, heatmap_hw=heatmap_hw)
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  prep = make_spatial_batch_fn(model, spec)

  def stream() -> Iterator[dict]:
    for batch in batches:
      if mesh is not None:
        batch = input_pipeline.to_global_array(batch, mesh)
      yield prep(params, batch)

  return sm.fit_spatial_model(
    spec.module(),
    stream(),
    steps,
    params=init_params,
    learning_rate=learning_rate,
    log_every=log_every,
    log_fn=log_fn,
  )


# ------------------------------------------------------------------------------------
# Saving.


def saved_path(workdir: str) -> str:
  """`WORKDIR/spatial_model/mrf.npz`."""
  return os.path.join(workdir, SAVE_DIR, SAVE_FILE)


def _host(x) -> np.ndarray:
  """A (replicated) array as numpy, also when it spans several hosts."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_shards[0].data)
  return np.asarray(x)


def save(workdir: str, mrf: FittedMRF) -> str:
  """Writes `mrf` atomically (temporary file + rename) to `saved_path(workdir)`.

  Call it from one process only (`jax.process_index() == 0`).

  Returns:
    The path written.
  """
  path = saved_path(workdir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = flax.traverse_util.flatten_dict(mrf.params, sep="/")
  arrays = {f"params/{k}": _host(v) for k, v in flat.items()}
  meta = json.dumps({"spec": mrf.spec.to_json(), "info": mrf.info}, default=float)
  buf = io.BytesIO()
  np.savez(buf, meta=np.asarray(meta), **arrays)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)
  return path


def load(workdir: str) -> FittedMRF | None:
  """The spatial model saved in `workdir`, or None when there is none."""
  path = saved_path(workdir)
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as f:
    meta = json.loads(str(f["meta"]))
    flat = {k[len("params/") :]: np.asarray(f[k]) for k in f.files if k.startswith("params/")}
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return FittedMRF(MRFSpec.from_json(meta["spec"]), params, meta.get("info", {}))


# ------------------------------------------------------------------------------------
# Prediction.


def predict_with_spatial_model(
  model,
  spec: MRFSpec,
  params: Any,
  mrf_params: Any,
  images: jax.Array,
  torso_box: jax.Array,
  *,
  coarse_refine: bool = False,
) -> dict[str, jax.Array]:
  """The cascade's estimates with and without the spatial model (pure; jit it).

  Args:
    model: the cascade.
    spec: the spatial model's spec (its heat-map size and stride must be the
      coarse model's on these images).
    params: the cascade's parameters.
    mrf_params: the spatial model's parameters.
    images: `(B, H, W, 3)` float in [0, 1].
    torso_box: `(B, 4)` canvas x1, y1, x2, y2 of the person to select (a
      degenerate box, e.g. zeros, means "no torso information").
    coarse_refine: sub-pixel refinement of the reported `coarse` and `coarse_mrf`
      argmaxes (the paper's coarse estimate is the plain argmax). The location
      handed to the fine stage is refined as the cascade's own argmax is.

  Returns:
    `(B, J, 2)` canvas (x, y): `coarse` (the coarse heat-maps' argmax), `cascade`
    (refined by the fine stage), `coarse_mrf` (the MRF marginals' argmax),
    `cascade_mrf` (the fine stage refining the MRF's pick); `coarse_heatmaps`
    `(B, h, w, J)` and `log_marginals` `(B, h, w, J)`.
  """
  v = {"params": params}
  out = model.apply(v, images, train=False)
  heat = out["coarse_heatmaps"]
  stride = model.coarse.stride
  if spec.stride != stride:
    raise ValueError(f"spatial model stride {spec.stride} != the coarse model's {stride}")
  coarse, _ = codec.decode_coarse(heat, stride, refine=coarse_refine)
  logp = spec.module().apply({"params": mrf_params}, heat, spec.torso_map(torso_box))
  marginals = jnp.exp(logp.astype(jnp.float32))
  coarse_mrf, _ = codec.decode_coarse(marginals, stride, refine=coarse_refine)
  seed, _ = codec.decode_coarse(marginals, stride)  # as Cascade.__call__ decodes its own
  refined = model.apply(v, images, train=False, coarse_xy=seed)
  return {
    "coarse": coarse,
    "cascade": out["xy"],
    "coarse_mrf": coarse_mrf,
    "cascade_mrf": refined["xy"],
    "coarse_heatmaps": heat,
    "log_marginals": logp,
  }


def make_mrf_predict_fn(
  model,
  mesh: Mesh,
  spec: MRFSpec,
  *,
  coarse_refine: bool = False,
  keep_heatmaps: bool = False,
) -> Callable[[Any, Any, dict], dict]:
  """A jitted `(cascade params, MRF params, global batch) -> dict` (see `make_predict_fn`).

  One compiled function serves any MRF parameters of `spec`; cached, so equal
  arguments return the same function.
  """
  return _mrf_predict_fn(model, mesh, spec, bool(coarse_refine), bool(keep_heatmaps))


@functools.lru_cache(maxsize=16)
def _mrf_predict_fn(model, mesh: Mesh, spec: MRFSpec, coarse_refine: bool, keep_heatmaps: bool):
  def predict(params, mrf_params, batch):
    images = batch["image"].astype(jnp.float32) / 255.0
    out = predict_with_spatial_model(
      model, spec, params, mrf_params, images, batch["torso_box"], coarse_refine=coarse_refine
    )
    result = {k: v for k, v in batch.items() if k != "image"}
    for k in ("coarse", "cascade", *PREDICTION_KEYS):
      result[k] = out[k]
    if keep_heatmaps:
      result["coarse_heatmaps"] = out["coarse_heatmaps"]
    return result

  return jax.jit(predict, out_shardings=NamedSharding(mesh, PartitionSpec()))


def make_predict_fn(
  model,
  mesh: Mesh,
  mrf: FittedMRF,
  *,
  coarse_refine: bool = False,
  keep_heatmaps: bool = False,
) -> Callable[[Any, dict], dict]:
  """`evaluation.make_predict_fn` plus the spatial model's `coarse_mrf`, `cascade_mrf`.

  Returns a `(cascade params, global batch) -> dict` usable by
  `evaluation.predict_dataset`: `coarse`, `cascade`, `coarse_mrf`, `cascade_mrf`
  `(B, J, 2)` canvas frame, `coarse_heatmaps` with `keep_heatmaps`, and every
  batch field but the image, replicated. The MRF parameters are passed to the
  jitted function as arguments (not baked into it as constants).
  """
  jitted = make_mrf_predict_fn(
    model, mesh, mrf.spec, coarse_refine=coarse_refine, keep_heatmaps=keep_heatmaps
  )
  mrf_params = jax.device_put(mrf.params, NamedSharding(mesh, PartitionSpec()))
  return lambda params, batch: jitted(params, mrf_params, batch)


def make_photo_predictor(
  model, spec: MRFSpec, canvas_hw: tuple[int, int], scales: Sequence[float] = (1.0,)
):
  """`inference.make_predictor` with the spatial model between the heat-maps and the fine stage.

  Returns a jitted `(params, mrf_params, canvases (S, B, H, W, 3) uint8,
  torso_box (B, 4) canvas px at scale 1) -> dict`: `xy` `(B, J, 2)` (the cascade
  refining the MRF's pick on the scale-averaged heat-maps), `coarse_xy` (the
  MRF's pick), `score` `(B, J)` (the averaged heat-map's value there, as
  `inference.make_predictor`'s peak).
  """
  scales = tuple(float(s) for s in scales)
  if 1.0 not in scales:
    raise ValueError(f"scales must include 1.0 (the refined scale), got {scales}")
  stride = model.coarse.stride
  base = scales.index(1.0)
  module = spec.module()

  @jax.jit
  def predict(params, mrf_params, canvases, torso_box):
    v = {"params": params}
    maps = []
    for i, s in enumerate(scales):
      x = canvases[i].astype(jnp.float32) / 255.0
      heat = model.apply(v, x, train=False, method=model.coarse_heatmaps)
      maps.append(heat if s == 1.0 else inference.resample_heatmaps(heat, s, stride, canvas_hw))
    heat = jnp.mean(jnp.stack(maps), axis=0)
    logp = module.apply({"params": mrf_params}, heat, spec.torso_map(torso_box))
    coarse_xy, _ = codec.decode_coarse(jnp.exp(logp.astype(jnp.float32)), stride)
    out = model.apply(
      v, canvases[base].astype(jnp.float32) / 255.0, train=False, coarse_xy=coarse_xy
    )
    # The heat-map value at the chosen pixel (the plain predictor reports its peak).
    uv = jnp.round(codec.input_to_heatmap(coarse_xy, stride)).astype(jnp.int32)
    b, h, w, j = heat.shape
    u = jnp.clip(uv[..., 0], 0, w - 1)
    vv = jnp.clip(uv[..., 1], 0, h - 1)
    score = heat[jnp.arange(b)[:, None], vv, u, jnp.arange(j)[None, :]]
    return {"xy": out["xy"], "coarse_xy": coarse_xy, "score": score}

  return predict


def image_box_to_canvas(box: Sequence[float], canvas_to_image: np.ndarray) -> np.ndarray:
  """An image-pixel box x1, y1, x2, y2 → the canvas box (the `(2, 3)` map is a similarity)."""
  a = np.asarray(canvas_to_image, np.float64)
  inv = np.linalg.inv(a[:, :2])
  x1, y1, x2, y2 = (float(v) for v in box)
  corners = (np.array([[x1, y1], [x2, y2]]) - a[:, 2]) @ inv.T
  return np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)


def predict_image(
  predict_fn,
  params,
  mrf_params,
  image: np.ndarray,
  canvas_hw: tuple[int, int],
  torso_box: Sequence[float],
  scales: Sequence[float] = (1.0,),
) -> tuple[np.ndarray, np.ndarray]:
  """One photograph `(h, w, 3)` uint8 and its torso box (image px) → `(J, 2)` image (x, y), `(J,)` scores."""
  canvases, c2i = [], None
  for s in scales:
    canvas, m = inference.letterbox(image, canvas_hw, s)
    canvases.append(canvas[None])
    if s == 1.0:
      c2i = m
  box = image_box_to_canvas(torso_box, c2i)[None]
  out = jax.device_get(predict_fn(params, mrf_params, np.stack(canvases), box))
  return out["xy"][0] @ c2i[:, :2].T + c2i[:, 2], out["score"][0]
