"""MRF spatial model with an observed torso node (paper §3.3; Tompson et al. NIPS 2014).

The CVPR 2015 paper selects the annotated person among several detected ones by
feeding the ConvNet heat-maps, plus the ground-truth torso position as an extra
observed node, through the spatial model of Tompson, Jain, LeCun, Bregler, "Joint
Training of a Convolutional Network and a Graphical Model" (NIPS 2014). For each
joint A the marginal is a product of experts, one per neighbouring node v:

  p̄_A ∝ p_A · Π_v (SoftPlus(k_{A|v}) * ReLU(p_v) + SoftPlus(b_{v→A})),

computed in the log domain; `*` is a 2-D convolution whose learned kernel k_{A|v}
spans every possible offset, (2h − 1, 2w − 1) for an (h, w) heat-map, so it is done
with FFTs. One round of messages, as in the NIPS paper (not loopy belief
propagation to convergence).

Frames (docs/design.md): points are (x, y), 0-based, pixel centres at integers.
Heat-maps are NHWC `(B, h, w, J)` in the heat-map frame at stride s: heat-map pixel
u has its centre at input x = s·u + (s − 1)/2. Targets and decoding use
`codec.HeatmapCodec` (Gaussians at the joints; argmax). Node indices: 0..J−1 are the joints
in model order, node J is the torso.

Kernel convention: `k[c + d]` with c = (kh // 2, kw // 2) and d = (dy, dx) is the
affinity for the destination joint at `source + d` (true convolution, kernel centre
at c).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from heatpose_jax.data.joints import Skeleton
from heatpose_jax.model import codec

Edge = tuple[int, int]

# ------------------------------------------------------------------------------------
# Convolutions.


def fft_size(n: int) -> int:
  """Smallest m ≥ n whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
  m = max(int(n), 1)
  while True:
    r = m
    for p in (2, 3, 5):
      while r % p == 0:
        r //= p
    if r == 1:
      return m
    m += 1


def fft_conv2d_pairs(x: jax.Array, k: jax.Array, src: Sequence[int] | np.ndarray) -> jax.Array:
  """Many 'same' true convolutions sharing sources, by zero-padded real FFTs.

  Edge e convolves source map `x[:, src[e]]` with its own kernel `k[e]`. Each
  source's spectrum is computed once, whatever the number of edges leaving it.
  Zero padding, no wrap-around: the FFT length n (per axis) is the smallest fast
  length with n ≥ max(h + c, h + kh − 1 − c, kh), c = kh // 2, which is all the
  'same' window needs to be free of circular aliasing (the full linear
  convolution, length h + kh − 1, is not needed: for kh = 2h − 1 this is 2h − 1
  instead of 3h − 2, 2.25× fewer FFT points in 2-D).

  Args:
    x: (B, N, h, w) source maps (channel-first: the FFT runs on the last two axes).
    k: (E, kh, kw) kernels, any sizes; centre at (kh // 2, kw // 2).
    src: (E,) int source index per kernel, into x's axis 1.

  Returns:
    (B, E, h, w): out[b, e, p] = Σ_q x[b, src[e], q] · k[e, p − q + c], in x's
    dtype promoted to float32 at least (FFTs need ≥ f32).
  """
  h, w = x.shape[-2:]
  kh, kw = k.shape[-2:]
  ch, cw = kh // 2, kw // 2
  fh = fft_size(max(h + ch, h + kh - 1 - ch, kh))
  fw = fft_size(max(w + cw, w + kw - 1 - cw, kw))
  dtype = jnp.promote_types(jnp.promote_types(x.dtype, k.dtype), jnp.float32)
  xf = jnp.fft.rfft2(x.astype(dtype), s=(fh, fw))  # (B, N, fh, fw//2+1)
  kf = jnp.fft.rfft2(k.astype(dtype), s=(fh, fw))  # (E, fh, fw//2+1)
  src = np.asarray(src, dtype=np.int32)
  full = jnp.fft.irfft2(xf[:, src] * kf[None], s=(fh, fw))  # (B, E, fh, fw)
  # Circular full[n] = Σ_q x[q] k[(n − q) mod fh]; 'same' output p is full[p + c],
  # and fh ≥ h + kh − 1 − c keeps every other term of that sum out of the window.
  return full[..., ch : ch + h, cw : cw + w].astype(dtype)


def fft_conv2d_same(x: jax.Array, k: jax.Array) -> jax.Array:
  """One kernel, 'same' true convolution by FFT (zero padding, no wrap-around).

  Args:
    x: (B, h, w) maps.
    k: (kh, kw) kernel, centre at (kh // 2, kw // 2).

  Returns:
    (B, h, w): out[b, p] = Σ_q x[b, q] · k[p − q + c], c = (kh // 2, kw // 2).
  """
  return fft_conv2d_pairs(x[:, None], k[None], [0])[:, 0]


def direct_conv2d_same(x: jax.Array, k: jax.Array) -> jax.Array:
  """Reference for `fft_conv2d_same`: the same true convolution by lax.conv.

  Args:
    x: (B, h, w) maps.
    k: (kh, kw) kernel, centre at (kh // 2, kw // 2).

  Returns:
    (B, h, w), equal to `fft_conv2d_same(x, k)` up to rounding.
  """
  kh, kw = k.shape
  # lax.conv correlates; flipping the kernel turns it into a convolution, and the
  # flip moves the centre, hence the asymmetric padding.
  pad = ((kh - 1 - kh // 2, kh // 2), (kw - 1 - kw // 2, kw // 2))
  out = jax.lax.conv_general_dilated(
    x[:, None].astype(jnp.float32),
    k[::-1, ::-1][None, None].astype(jnp.float32),
    window_strides=(1, 1),
    padding=pad,
    dimension_numbers=("NCHW", "OIHW", "NCHW"),
    precision=jax.lax.Precision.HIGHEST,
  )
  return out[:, 0]


# ------------------------------------------------------------------------------------
# Node maps and targets.


def _heatmap_grid(heatmap_hw: tuple[int, int], stride: int) -> tuple[jax.Array, jax.Array]:
  """Input-frame (x, y) of every heat-map pixel centre: two (h, w) arrays."""
  h, w = heatmap_hw
  off = (stride - 1) / 2.0
  xs = stride * jnp.arange(w, dtype=jnp.float32) + off
  ys = stride * jnp.arange(h, dtype=jnp.float32) + off
  return jnp.broadcast_to(xs[None, :], (h, w)), jnp.broadcast_to(ys[:, None], (h, w))


@functools.partial(
  jax.jit, static_argnames=("heatmap_hw", "stride", "sigma", "box_sigma_fraction", "mode")
)
def torso_heatmap(
  torso_box: jax.Array,
  heatmap_hw: tuple[int, int],
  stride: int,
  sigma: float,
  *,
  box_sigma_fraction: float = 0.0,
  mode: str = "gaussian",
) -> jax.Array:
  """The observed torso node's map.

  'gaussian': a Gaussian (peak 1) at the box centre, standard deviation
  σ_eff = sqrt(σ² + (f · diag / s)²) heat-map pixels, with f =
  `box_sigma_fraction` and diag the box diagonal in input pixels (f = 0: a fixed
  σ, the default; f > 0 widens the node for large, i.e. close, people).
  'box': the indicator of the heat-map pixels whose centres lie inside the box
  (the Gaussian where none does). A degenerate box (x2 ≤ x1 or y2 ≤ y1, e.g. the
  zeros of a dataset without a torso box) gives an all-ones map, which carries no
  information: its messages are uniform.

  Args:
    torso_box: (B, 4) x1, y1, x2, y2 in input (canvas) pixels.
    heatmap_hw: (h, w) of the heat-map.
    stride: heat-map stride s.
    sigma: Gaussian standard deviation in heat-map pixels.
    box_sigma_fraction: f above.
    mode: 'gaussian' or 'box'.

  Returns:
    (B, h, w) float32, non-negative.
  """
  if mode not in ("gaussian", "box"):
    raise ValueError(f"mode must be 'gaussian' or 'box', got {mode!r}")
  box = torso_box.astype(jnp.float32)
  x1, y1, x2, y2 = (box[:, i, None, None] for i in range(4))
  gx, gy = _heatmap_grid(heatmap_hw, stride)
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  diag = jnp.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)
  sig = jnp.sqrt(sigma**2 + (box_sigma_fraction * diag / stride) ** 2) * stride
  out = jnp.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2.0 * sig**2))
  if mode == "box":
    ind = ((gx >= x1) & (gx <= x2) & (gy >= y1) & (gy <= y2)).astype(jnp.float32)
    out = jnp.where(ind.sum(axis=(1, 2), keepdims=True) > 0, ind, out)
  ok = (x2 > x1) & (y2 > y1)
  return jnp.where(ok, out, 1.0)


# ------------------------------------------------------------------------------------
# Graphs.


def default_edges(skeleton: Skeleton, *, torso: bool = True) -> tuple[Edge, ...]:
  """The CVPR 2015 tree: both directions of every skeleton limb, then torso → joint.

  Args:
    skeleton: gives the joints (model order) and `limbs`.
    torso: add an edge from the torso node (index J) to every joint.

  Returns:
    (src, dst) node index pairs.
  """
  edges = []
  for a, b in skeleton.limb_indices.tolist():
    edges += [(a, b), (b, a)]
  if torso:
    edges += [(skeleton.num_joints, j) for j in range(skeleton.num_joints)]
  return tuple(edges)


def fully_connected_edges(num_joints: int, *, torso: bool = True) -> tuple[Edge, ...]:
  """Every ordered pair of distinct joints, plus torso → joint (a dense alternative to the tree)."""
  edges = [(a, b) for b in range(num_joints) for a in range(num_joints) if a != b]
  if torso:
    edges += [(num_joints, j) for j in range(num_joints)]
  return tuple(edges)


def torso_edges(num_joints: int) -> tuple[Edge, ...]:
  """Only torso → joint: the smallest graph that does person selection."""
  return tuple((num_joints, j) for j in range(num_joints))


# ------------------------------------------------------------------------------------
# The model.


class SpatialModel(nn.Module):
  """One round of product-of-experts messages in the log domain.

  For joint A with in-edges v → A:

    log p̄_A = log(q_A + ε) + Σ_v log(max(K_{A|v} * q_v, 0) + β_{v→A} + ε) − log Z_A,

  with q_v = ReLU(p_v) / Σ ReLU(p_v) (each input map normalized to sum 1 over
  (h, w), so the model is blind to the heat-map's scale and the bias has a fixed
  meaning; an all-zero or negative map becomes all zeros, i.e. a uniform factor),
  K = SoftPlus(k) / s and β = SoftPlus(b) / s with s = max(max SoftPlus(k),
  SoftPlus(b)) per edge (no gradient through s), and Z_A the sum over (h, w) (logsumexp). Dividing an edge's factor by s changes
  it by a constant over (h, w), which Z_A removes: the result is exactly the
  formula without s, but no kernel value, however large, can overflow the FFT,
  and ε (relative to the largest kernel value) bounds each factor's dynamic range.
  FFTs run in float32 (at least) whatever `dtype`.

  Attributes:
    num_joints: J; node J is the torso.
    edges: (src, dst) node pairs; dst < J (the torso is observed); src == dst
      adds a learned blur of the joint's own map.
    heatmap_hw: (h, w) of the heat-maps.
    kernel_hw: kernel size; default (2h − 1, 2w − 1), every offset.
    kernel_init_value: initial raw (pre-SoftPlus) kernel value. A constant
      kernel as large as (2h − 1, 2w − 1) sends a uniform message, so the
      untrained model returns the normalized unary heat-maps.
    bias_init_value: initial raw (pre-SoftPlus) bias.
    eps: floor added inside each log.
    use_unary: include the log(q_A + ε) factor (the paper's p_A).
    dtype: dtype of the returned log-marginals.
    param_dtype: dtype of the parameters.
  """

  num_joints: int
  edges: tuple[Edge, ...]
  heatmap_hw: tuple[int, int]
  kernel_hw: tuple[int, int] | None = None
  kernel_init_value: float = 0.0
  bias_init_value: float = -5.0
  eps: float = 1e-6
  use_unary: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _kernel_hw(self) -> tuple[int, int]:
    h, w = self.heatmap_hw
    return tuple(self.kernel_hw) if self.kernel_hw is not None else (2 * h - 1, 2 * w - 1)

  def _check_edges(self) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(self.edges, dtype=np.int32).reshape(-1, 2)
    if e.shape[0] == 0 and not self.use_unary:
      raise ValueError("no edges and no unary: nothing to compute")
    if ((e[:, 0] < 0) | (e[:, 0] > self.num_joints)).any():
      raise ValueError(f"edge sources must be in [0, {self.num_joints}]: {self.edges}")
    if ((e[:, 1] < 0) | (e[:, 1] >= self.num_joints)).any():
      raise ValueError(f"edge destinations must be joints [0, {self.num_joints}): {self.edges}")
    return e[:, 0], e[:, 1]

  @nn.compact
  def __call__(self, heatmaps: jax.Array, torso_map: jax.Array | None = None) -> jax.Array:
    """Log-marginals of the joints.

    Args:
      heatmaps: (B, h, w, J) ConvNet heat-maps (any scale; negatives ignored).
      torso_map: (B, h, w) the torso node's map (`torso_heatmap`); None means
        no torso information (a uniform map).

    Returns:
      (B, h, w, J) log p̄, each joint's exp summing to 1 over (h, w).
    """
    b, h, w, j = heatmaps.shape
    if (h, w) != tuple(self.heatmap_hw) or j != self.num_joints:
      raise ValueError(
        f"heatmaps {heatmaps.shape} do not match heatmap_hw={self.heatmap_hw}, "
        f"num_joints={self.num_joints}"
      )
    src, dst = self._check_edges()
    n_edges = len(src)
    kh, kw = self._kernel_hw()
    raw_k = self.param(
      "kernels",
      nn.initializers.constant(self.kernel_init_value),
      (n_edges, kh, kw),
      self.param_dtype,
    )
    raw_b = self.param(
      "biases", nn.initializers.constant(self.bias_init_value), (n_edges,), self.param_dtype
    )

    cdt = jnp.promote_types(self.dtype, jnp.float32)
    if torso_map is None:
      torso_map = jnp.ones((b, h, w), cdt)
    nodes = jnp.concatenate([heatmaps.astype(cdt), torso_map.astype(cdt)[..., None]], axis=-1)
    nodes = jnp.moveaxis(nodes, -1, 1)  # (B, N, h, w), FFT on the last two axes
    q = jax.nn.relu(nodes)
    mass = q.sum(axis=(2, 3), keepdims=True)
    q = q / jnp.where(mass > 0, mass, 1.0)

    logp = jnp.zeros((b, j, h, w), cdt)
    if self.use_unary:
      logp = logp + jnp.log(q[:, :j] + self.eps)
    if n_edges:
      kern = jax.nn.softplus(raw_k.astype(cdt))  # (E, kh, kw)
      bias = jax.nn.softplus(raw_b.astype(cdt))  # (E,)
      scale = jax.lax.stop_gradient(jnp.maximum(kern.max(axis=(1, 2)), bias))
      scale = jnp.maximum(scale, jnp.finfo(cdt).tiny)
      conv = fft_conv2d_pairs(q, kern / scale[:, None, None], src)  # (B, E, h, w)
      # Round-off of the FFT can dip below 0; the true convolution cannot.
      msg = jnp.maximum(conv, 0.0) + (bias / scale)[None, :, None, None]
      log_msg = jnp.log(msg + self.eps)
      onehot = jnp.asarray(np.eye(j, dtype=np.float32)[dst], cdt)  # (E, J)
      logp = logp + jnp.einsum("behw,ej->bjhw", log_msg, onehot)
    logz = jax.nn.logsumexp(logp, axis=(2, 3), keepdims=True)
    return jnp.moveaxis(logp - logz, 1, -1).astype(self.dtype)


# ------------------------------------------------------------------------------------
# Training.


def spatial_model_loss(
  params: Any,
  apply_fn: Callable[..., jax.Array],
  heatmaps: jax.Array,
  torso_map: jax.Array,
  target_heatmaps: jax.Array,
  valid: jax.Array,
) -> jax.Array:
  """Cross-entropy of the marginals against the normalized target heat-maps.

  Args:
    params: the SpatialModel's params (the 'params' collection).
    apply_fn: `model.apply`.
    heatmaps: (B, h, w, J) ConvNet heat-maps.
    torso_map: (B, h, w) torso node map.
    target_heatmaps: (B, h, w, J) non-negative targets (e.g. Gaussians at the
      ground truth); each is normalized to sum 1 over (h, w).
    valid: (B, J) 1 where the joint is annotated (and the row is real); joints
      whose target is all zero are dropped as well.

  Returns:
    () float32: −Σ t log p̄, averaged over the valid (example, joint) pairs
    (0 when there are none).
  """
  logp = apply_fn({"params": params}, heatmaps, torso_map).astype(jnp.float32)
  t = jax.nn.relu(target_heatmaps.astype(jnp.float32))
  mass = t.sum(axis=(1, 2))  # (B, J)
  t = t / jnp.where(mass > 0, mass, 1.0)[:, None, None, :]
  ce = -(t * logp).sum(axis=(1, 2))  # (B, J)
  m = valid.astype(jnp.float32) * (mass > 0)
  return (ce * m).sum() / jnp.maximum(m.sum(), 1.0)


def make_spatial_batch(
  heatmaps: jax.Array,
  torso_box: jax.Array,
  joints: jax.Array,
  joints_valid: jax.Array,
  stride: int,
  *,
  target_sigma: float = 1.0,
  torso_sigma: float = 1.5,
  torso_box_sigma_fraction: float = 0.0,
  torso_mode: str = "gaussian",
  mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """A `fit_params` batch from coarse heat-maps and a pipeline batch.

  Args:
    heatmaps: (B, h, w, J) coarse heat-maps at stride s.
    torso_box: (B, 4) x1, y1, x2, y2 canvas pixels (batch['torso_box']).
    joints: (B, J, 2) (x, y) canvas pixels (batch['joints']).
    joints_valid: (B, J) (batch['joints_valid']).
    stride: heat-map stride s.
    target_sigma: target Gaussian σ in heat-map pixels.
    torso_sigma, torso_box_sigma_fraction, torso_mode: see `torso_heatmap`.
    mask: optional (B,) bool, False on padding rows (batch['_mask']).

  Returns:
    {'heatmaps': (B, h, w, J), 'torso_map': (B, h, w), 'target': (B, h, w, J),
     'valid': (B, J)} float32.
  """
  hw = tuple(heatmaps.shape[1:3])
  valid = joints_valid.astype(jnp.float32)
  if mask is not None:
    valid = valid * mask.astype(jnp.float32)[:, None]
  return {
    "heatmaps": heatmaps.astype(jnp.float32),
    "torso_map": torso_heatmap(
      torso_box, hw, stride, torso_sigma, box_sigma_fraction=torso_box_sigma_fraction,
      mode=torso_mode,
    ),
    "target": codec.HeatmapCodec(stride, target_sigma).encode(joints, valid, hw),
    "valid": valid,
  }  # fmt: skip


_BATCH_KEYS = ("heatmaps", "torso_map", "target", "valid")


def make_fit_step(
  model: SpatialModel, optimizer: optax.GradientTransformation
) -> Callable[[Any, Any, dict[str, jax.Array]], tuple[Any, Any, jax.Array]]:
  """A jitted (params, opt_state, batch) -> (params, opt_state, loss) step."""

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(spatial_model_loss)(
      params, model.apply, batch["heatmaps"], batch["torso_map"], batch["target"], batch["valid"]
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def fit_params(
  model: SpatialModel,
  batches: Iterable[dict[str, Any]],
  num_steps: int,
  *,
  params: Any = None,
  optimizer: optax.GradientTransformation | None = None,
  learning_rate: float = 0.05,
  log_every: int = 0,
  log_fn: Callable[[int, float], None] | None = None,
) -> Any:
  """Trains the spatial model on batches of (heat-maps, torso map, target, valid).

  Args:
    model: the SpatialModel.
    batches: yields dicts {'heatmaps': (B, h, w, J), 'torso_map': (B, h, w),
      'target': (B, h, w, J), 'valid': (B, J)} (see `make_spatial_batch`);
      at least `num_steps` of them.
    num_steps: optimizer steps.
    params: initial params; default: `model.init` on the first batch (the
      pass-through initialization).
    optimizer: default Adam(learning_rate).
    learning_rate: Adam's learning rate when `optimizer` is None.
    log_every: call `log_fn(step, loss)` every this many steps (0: never; the
      loss is only read back from the device then).
    log_fn: the logging callback; default prints.

  Returns:
    The trained params.
  """
  it: Iterator[dict[str, Any]] = iter(batches)
  optimizer = optimizer if optimizer is not None else optax.adam(learning_rate)
  step = make_fit_step(model, optimizer)
  log_fn = log_fn if log_fn is not None else (lambda i, v: print(f"spatial step {i}: {v:.4f}"))
  first = next(it)
  if params is None:
    params = jax.jit(model.init)(jax.random.key(0), first["heatmaps"], first["torso_map"])["params"]
  opt_state = optimizer.init(params)
  batch = first
  for i in range(num_steps):
    if i > 0:
      batch = next(it)
    # Only the four arrays: extra keys would be traced (and re-traced) for nothing.
    params, opt_state, loss = step(params, opt_state, {k: batch[k] for k in _BATCH_KEYS})
    if log_every and (i + 1) % log_every == 0:
      log_fn(i + 1, float(loss))
  return params


# ------------------------------------------------------------------------------------
# Evaluation.


@jax.jit
def right_person_rate(
  pred: jax.Array, target_joints: jax.Array, distractor_joints: jax.Array, valid: jax.Array
) -> jax.Array:
  """Fraction of valid joints predicted closer to the target person than the distractor.

  Args:
    pred: (B, J, 2) predicted (x, y).
    target_joints: (B, J, 2) the annotated person's joints, same frame.
    distractor_joints: (B, J, 2) the other person's joints.
    valid: (B, J) 1 for joints to count (e.g. joints_valid × has_distractor).

  Returns:
    () float32 in [0, 1]; ties count as wrong; 0 when nothing is valid.
  """
  d_t = jnp.linalg.norm(pred - target_joints, axis=-1)
  d_d = jnp.linalg.norm(pred - distractor_joints, axis=-1)
  v = valid.astype(jnp.float32)
  return ((d_t < d_d) * v).sum() / jnp.maximum(v.sum(), 1.0)
