"""The MRF spatial model (`spatial_model`) on top of a trained cascade (paper §3.3).

  * `fit_from_cascade`: the trained coarse model's heat-maps (inference mode) on
    training batches → `spatial_model.make_spatial_batch` (with the batch's
    `torso_box` as the observed torso node) → `spatial_model.fit_params`.
  * `save` / `load`: one atomic `.npz` in `WORKDIR/spatial_model/mrf.npz` holding the
    parameters and, as JSON, the `MRFSpec` (graph, heat-map size, stride, torso
    node) and the fit's record (the cascade step it was fitted on, steps, loss).
  * `mrf_selector`: the MRF as the location selector of the one prediction path
    (`inference.predict(..., selector=...)`): coarse heat-maps and the torso box →
    marginals, whose argmax the cascade refines ("cascade+MRF").

Nothing here reads a config: a run's MRF (its config's steps and learning rate,
loaded if saved, else fitted on its training batches) is `train.fit_spatial_model`.

Frames (docs/design.md): points are (x, y) canvas (input) pixels, 0-based, pixel
centres at integers; heat-maps NHWC `(B, h, w, J)` at stride s.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from heatpose_jax.core import fileio, sharding
from heatpose_jax.data.joints import Skeleton
from heatpose_jax.mrf import spatial_model as sm

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


# ------------------------------------------------------------------------------------
# Fitting.


@functools.lru_cache(maxsize=16)
def make_spatial_batch_fn(model, spec: MRFSpec) -> Callable[[Any, dict], dict]:
  """A jitted `(cascade params, pipeline batch) -> spatial-model batch`.

  The coarse model runs in inference mode (no dropout) on `batch['image']`
  (uint8 canvases); the torso node comes from `batch['torso_box']`, the targets from
  `batch['joints']`, padding rows (`_mask` False) are not counted. Cached: equal
  (model, spec) pairs (Flax modules compare by value) share one compiled function.
  """

  @jax.jit
  def prep(params, batch):
    heat = model.apply({"params": params}, batch["image"], train=False, method="coarse_heatmaps")
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
    log_every, log_fn: see `spatial_model.fit_params`.

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
        batch = sharding.to_global_array(batch, mesh)
      yield prep(params, batch)

  return sm.fit_params(
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
  """Writes `mrf` atomically to `saved_path(workdir)`; call it from one process only.

  Returns:
    The path written.
  """
  path = saved_path(workdir)
  flat = flax.traverse_util.flatten_dict(mrf.params, sep="/")
  arrays = {f"params/{k}": _host(v) for k, v in flat.items()}
  meta = json.dumps({"spec": mrf.spec.to_json(), "info": mrf.info}, default=float)
  fileio.write_npz(path, meta=np.asarray(meta), **arrays)
  return path


def load(workdir: str) -> FittedMRF | None:
  """The spatial model saved in `workdir`, or None when there is none.

  Raises:
    ValueError: the file is there but damaged or unreadable (one line naming it).
  """
  path = saved_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f["meta"]))
      flat = {k[len("params/") :]: np.asarray(f[k]) for k in f.files if k.startswith("params/")}
    spec = MRFSpec.from_json(meta["spec"])
  except Exception as e:  # noqa: BLE001 - zip, npy, JSON and OS errors alike: a damaged file
    reason = " ".join(str(e).split()) or type(e).__name__
    raise ValueError(
      f"{path}: damaged spatial model ({type(e).__name__}: {reason}); refit it or remove it"
    ) from None
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return FittedMRF(spec, params, meta.get("info", {}))


# ------------------------------------------------------------------------------------
# Prediction.


@functools.lru_cache(maxsize=16)
def mrf_selector(spec: MRFSpec):
  """The MRF as an `inference.Selector`: `(mrf params, heat-maps, torso box) -> marginals`.

  One function per spec (cached), so the programs built on it are shared too.

  The returned maps `(B, h, w, J)` are the MRF's marginals p̄ (exp of the
  log-marginals, each joint summing to 1); their argmax is the selected location.
  A degenerate torso box (e.g. zeros) carries no information.
  """
  module = spec.module()

  def select(mrf_params, heatmaps: jax.Array, torso_box: jax.Array) -> jax.Array:
    b, h, w, j = heatmaps.shape
    if (h, w) != tuple(spec.heatmap_hw) or j != spec.num_joints:
      raise ValueError(
        f"coarse heat-maps {heatmaps.shape} do not match the spatial model's "
        f"heatmap_hw={spec.heatmap_hw}, num_joints={spec.num_joints}"
      )
    if torso_box is None:
      torso_box = jnp.zeros((b, 4), jnp.float32)
    logp = module.apply({"params": mrf_params}, heatmaps, spec.torso_map(torso_box))
    return jnp.exp(logp.astype(jnp.float32))

  return select
