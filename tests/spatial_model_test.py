"""Tests of the MRF spatial model (heatpose_jax/mrf/spatial_model.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatpose_jax.data.joints import SKELETONS
from heatpose_jax.model import codec
from heatpose_jax.mrf import spatial_model as sm


def _inv_softplus(y):
  return np.log(np.expm1(y))


def _init(model, hm, torso):
  """Jitted init: eager ops each compile on their own, which is slow."""
  return jax.jit(model.init)(jax.random.key(0), hm, torso)["params"]


def _apply(model, params, hm, torso):
  return jax.jit(model.apply)({"params": params}, hm, torso)


_make_batch = jax.jit(
  sm.make_spatial_batch, static_argnames=("stride", "target_sigma", "torso_sigma")
)
_loss = jax.jit(sm.spatial_model_loss, static_argnums=1)


def _lse_hw(logp):
  """(B, h, w, J) -> (B, J) logsumexp over the pixels."""
  return jax.nn.logsumexp(logp, axis=(1, 2))


# ------------------------------------------------------------------------------------
# Convolutions.


@pytest.mark.parametrize(
  "hw,khw",
  [((12, 10), (23, 19)), ((12, 10), (3, 5)), ((12, 10), (1, 1)), ((12, 10), (4, 2)),
   ((7, 9), (31, 9)), ((1, 6), (1, 11))],
)  # fmt: skip
def test_fft_conv_equals_direct_conv(hw, khw):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, *hw)), jnp.float32)
  k = jnp.asarray(rng.normal(size=khw), jnp.float32)
  a = sm.fft_conv2d_same(x, k)
  b = sm.direct_conv2d_same(x, k)
  assert a.shape == x.shape
  np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()))


def test_conv_is_true_convolution_with_centre_at_half_size():
  # A delta at source q and a kernel that is 1 at index c + d: the output is a
  # delta at q + d (a correlation would put it at q − d).
  h, w = 9, 11
  x = jnp.zeros((1, h, w)).at[0, 4, 3].set(1.0)
  k = jnp.zeros((2 * h - 1, 2 * w - 1)).at[h - 1 + 2, w - 1 + 5].set(1.0)
  for conv in (sm.fft_conv2d_same, sm.direct_conv2d_same):
    out = np.asarray(conv(x, k))[0]
    assert np.unravel_index(out.argmax(), out.shape) == (6, 8)
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)


def test_fft_conv_pairs_equals_single_convolutions():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 3, 8, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 15, 11)), jnp.float32)
  src = [2, 0, 2, 1]
  out = sm.fft_conv2d_pairs(x, k, src)
  assert out.shape == (2, 4, 8, 6)
  for e, s in enumerate(src):
    np.testing.assert_allclose(out[:, e], sm.direct_conv2d_same(x[:, s], k[e]), atol=1e-4)


def test_fft_size_is_smooth_and_large_enough():
  for n in [1, 7, 63, 94, 97, 119, 239]:
    m = sm.fft_size(n)
    assert m >= n and m - n < 10
    r = m
    for p in (2, 3, 5):
      while r % p == 0:
        r //= p
    assert r == 1


# ------------------------------------------------------------------------------------
# Node maps, decoding, graphs.


def test_torso_heatmap_gaussian_box_and_degenerate():
  stride, hw = 4, (16, 12)
  # Box centre at input (4·5 + 1.5, 4·9 + 1.5): heat-map pixel (u, v) = (5, 9).
  cx, cy = 21.5, 37.5
  boxes = jnp.array([[cx - 6, cy - 10, cx + 6, cy + 10], [0.0, 0.0, 0.0, 0.0]])
  g = sm.torso_heatmap(boxes, hw, stride, sigma=1.5)
  assert g.shape == (2, 16, 12)
  assert np.unravel_index(int(g[0].argmax()), hw) == (9, 5)
  np.testing.assert_allclose(g[0, 9, 5], 1.0, atol=1e-6)
  np.testing.assert_allclose(g[0, 9, 6], np.exp(-1 / (2 * 1.5**2)), rtol=1e-5)
  np.testing.assert_array_equal(g[1], 1.0)  # no box: uninformative
  wide = sm.torso_heatmap(boxes, hw, stride, sigma=1.5, box_sigma_fraction=0.5)
  assert wide[0, 9, 8] > g[0, 9, 8]
  box = sm.torso_heatmap(boxes, hw, stride, sigma=1.5, mode="box")
  # Pixel centres x = 4u + 1.5 in [15.5, 27.5] → u 4..6; y in [27.5, 47.5] → v 7..11.
  np.testing.assert_array_equal(np.argwhere(np.asarray(box[0]) > 0)[[0, -1]], [[7, 4], [11, 6]])
  np.testing.assert_array_equal(box[1], 1.0)


def test_default_edges_tree_plus_torso():
  sk = SKELETONS["synthetic"]
  j = sk.num_joints
  edges = sm.default_edges(sk)
  assert len(edges) == 2 * len(sk.limbs) + j
  assert set(edges[-j:]) == {(j, i) for i in range(j)}
  assert all(0 <= d < j for _, d in edges)
  assert (sk.index("r_elbow"), sk.index("r_wrist")) in edges
  assert (sk.index("r_wrist"), sk.index("r_elbow")) in edges
  assert len(sm.fully_connected_edges(j)) == j * (j - 1) + j
  assert sm.torso_edges(j) == edges[-j:]


def test_rejects_torso_as_destination():
  model = sm.SpatialModel(num_joints=2, edges=((0, 2),), heatmap_hw=(4, 4))
  with pytest.raises(ValueError, match="destinations"):
    model.init(jax.random.key(0), jnp.ones((1, 4, 4, 2)), jnp.ones((1, 4, 4)))


def test_right_person_rate():
  tgt = jnp.zeros((2, 2, 2))
  dis = jnp.full((2, 2, 2), 10.0)
  pred = jnp.array([[[1.0, 1.0], [9.0, 9.0]], [[2.0, 0.0], [9.0, 9.0]]])
  np.testing.assert_allclose(sm.right_person_rate(pred, tgt, dis, jnp.ones((2, 2))), 0.5)
  valid = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(sm.right_person_rate(pred, tgt, dis, valid), 1.0)
  np.testing.assert_allclose(sm.right_person_rate(pred, tgt, dis, jnp.zeros((2, 2))), 0.0)


# ------------------------------------------------------------------------------------
# Person selection.


def _decode(log_marginals, stride):
  """The MRF's pick: the argmax of the marginals (no sub-pixel step)."""
  return codec.HeatmapCodec(stride).decode(log_marginals, refine=False)[0]


def _two_peaks(hw, stride, true_xy, distractor_xy, sigma=1.5):
  pts = jnp.asarray([[true_xy], [distractor_xy]], jnp.float32).reshape(1, 2, 2)
  g = codec.HeatmapCodec(stride, sigma).encode(pts, jnp.ones((1, 2)), hw)  # (1, h, w, 2)
  return g.sum(axis=-1, keepdims=True)  # (1, h, w, 1): two equal peaks


def test_hand_built_torso_kernel_picks_the_consistent_peak():
  stride, hw = 4, (24, 20)
  h, w = hw
  off = np.array([6, -5])  # (dx, dy) heat-map pixels from torso to joint
  torso_uv = np.array([8, 14])
  good_uv, bad_uv = torso_uv + off, np.array([16, 18])
  to_xy = lambda uv: stride * uv + (stride - 1) / 2
  torso_xy = to_xy(torso_uv)
  box = jnp.asarray([[*(torso_xy - 10), *(torso_xy + 10)]], jnp.float32)
  torso_map = sm.torso_heatmap(box, hw, stride, sigma=1.0)
  model = sm.SpatialModel(num_joints=1, edges=((1, 0),), heatmap_hw=hw)
  params = _init(model, jnp.ones((1, h, w, 1)), torso_map)
  # Kernel index (c + dy, c + dx) = affinity for the joint at torso + (dx, dy).
  dy, dx = np.mgrid[-(h - 1) : h, -(w - 1) : w]
  prior = np.exp(-((dx - off[0]) ** 2 + (dy - off[1]) ** 2) / (2 * 2.0**2)) + 1e-4
  params = {"kernels": jnp.asarray(_inv_softplus(prior)[None], jnp.float32), "biases": -20.0 + 0 * params["biases"]}  # fmt: skip
  for a, b in [(good_uv, bad_uv), (bad_uv, good_uv)]:  # peak order must not matter
    hm = _two_peaks(hw, stride, to_xy(a), to_xy(b))
    lm = _apply(model, params, hm, torso_map)
    np.testing.assert_allclose(_decode(lm, stride)[0, 0], to_xy(good_uv))
    # The distractor is strongly attenuated, not just beaten by a hair.
    assert lm[0, good_uv[1], good_uv[0], 0] - lm[0, bad_uv[1], bad_uv[0], 0] > 5.0


def _synthetic_people(rng, n, hw, offsets, noise=0.6):
  """Two people per example: the target's torso is given, the distractor's is not.

  Heat-maps have equal peaks at both people's joints (+ noise), stride 1.
  """
  h, w = hw
  t = rng.uniform(6, min(h, w) - 6, (n, 2))
  d = rng.uniform(3, min(h, w) - 3, (n, 2))
  near = np.linalg.norm(d - t, axis=1) < 7
  d[near] = (t[near] + 10) % (min(h, w) - 3)  # keep the two people apart
  tj = t[:, None] + offsets[None] + rng.normal(0, noise, (n, len(offsets), 2))
  dj = d[:, None] + offsets[None] + rng.normal(0, noise, (n, len(offsets), 2))
  people = codec.HeatmapCodec(1, 1.5)
  ones = jnp.ones((n, len(offsets)))
  hm = people.encode(jnp.asarray(tj), ones, hw) + people.encode(jnp.asarray(dj), ones, hw)
  hm = hm + jnp.asarray(rng.normal(0, 0.05, hm.shape), jnp.float32)
  box = jnp.asarray(np.concatenate([t - 3, t + 3], axis=1), jnp.float32)
  valid = jnp.ones((n, len(offsets)))
  batch = _make_batch(hm, box, jnp.asarray(tj), valid, stride=1, torso_sigma=1.5)
  return batch, jnp.asarray(tj), jnp.asarray(dj)


def test_trained_model_selects_the_torso_consistent_person():
  hw = (24, 24)
  offsets = np.array([[5.0, -4.0], [-4.0, 6.0]])
  rng = np.random.default_rng(0)
  train, _, _ = _synthetic_people(rng, 2048, hw, offsets)
  test, tj, dj = _synthetic_people(np.random.default_rng(1), 256, hw, offsets)
  j = len(offsets)
  model = sm.SpatialModel(num_joints=j, edges=((0, 1), (1, 0), *sm.torso_edges(j)), heatmap_hw=hw)
  valid = test["valid"]

  def batches(bs=16):
    for i in range(0, 2048, bs):
      yield {k: v[i : i + bs] for k, v in train.items()}

  params0 = _init(model, test["heatmaps"], test["torso_map"])
  before = sm.right_person_rate(
    _decode(_apply(model, params0, test["heatmaps"], test["torso_map"]), 1),
    tj, dj, valid,
  )  # fmt: skip
  losses = []
  params = sm.fit_params(
    model, batches(), 128, learning_rate=0.1, log_every=16, log_fn=lambda i, v: losses.append(v)
  )
  after = sm.right_person_rate(
    _decode(_apply(model, params, test["heatmaps"], test["torso_map"]), 1),
    tj, dj, valid,
  )  # fmt: skip
  assert float(before) < 0.8  # equal peaks: the untrained model guesses
  assert float(after) > 0.9
  assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------------
# Numerics.


def test_untrained_model_passes_the_unary_through():
  rng = np.random.default_rng(2)
  hw = (10, 12)
  hm = jnp.asarray(rng.random((2, *hw, 3)), jnp.float32)
  model = sm.SpatialModel(num_joints=3, edges=sm.fully_connected_edges(3), heatmap_hw=hw)
  torso = jnp.asarray(rng.random((2, *hw)), jnp.float32)
  params = _init(model, hm, torso)
  lm = _apply(model, params, hm, torso)
  q = hm / hm.sum(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(jnp.exp(lm), q, atol=1e-5)


@pytest.mark.parametrize("kernel_value,bias_value", [(0.0, -5.0), (1e4, 50.0), (-1e4, -1e4), (80.0, -80.0)])  # fmt: skip
def test_messages_normalized_and_finite(kernel_value, bias_value):
  rng = np.random.default_rng(3)
  hw, j = (8, 10), 3
  hm = rng.normal(size=(5, *hw, j)).astype(np.float32)
  hm[0] = 0.0  # all zero
  hm[1] = -np.abs(hm[1])  # all negative
  hm[2] *= 1e30  # huge
  hm[3, ..., 0] = 0.0
  hm[3, 4, 5, 0] = 1e-30  # a single tiny positive pixel
  torso = np.abs(rng.normal(size=(5, *hw))).astype(np.float32)
  torso[0] = 0.0
  model = sm.SpatialModel(
    num_joints=j, edges=sm.fully_connected_edges(j) + ((1, 1),), heatmap_hw=hw
  )
  params = _init(model, jnp.asarray(hm), jnp.asarray(torso))
  kern = rng.normal(size=params["kernels"].shape) * 0.1 * abs(kernel_value) + kernel_value
  params = {
    "kernels": jnp.asarray(kern, jnp.float32),
    "biases": jnp.full_like(params["biases"], bias_value),
  }
  lm = _apply(model, params, jnp.asarray(hm), jnp.asarray(torso))
  assert lm.shape == (5, *hw, j)
  assert bool(jnp.isfinite(lm).all())
  np.testing.assert_allclose(_lse_hw(lm), 0.0, atol=1e-4)
  # All-zero and all-negative inputs with no torso give uniform marginals.
  if kernel_value == 0.0:
    np.testing.assert_allclose(lm[0], -np.log(hw[0] * hw[1]), atol=1e-4)
    np.testing.assert_allclose(lm[1], -np.log(hw[0] * hw[1]), atol=1e-4)


def test_full_skeleton_shapes_jit_and_finite_gradients():
  sk = SKELETONS["synthetic"]
  j, hw, b = sk.num_joints, (16, 16), 4
  model = sm.SpatialModel(num_joints=j, edges=sm.default_edges(sk), heatmap_hw=hw)
  rng = np.random.default_rng(4)
  hm = jnp.asarray(rng.normal(size=(b, *hw, j)), jnp.float32)
  box = jnp.asarray([[10.0, 10.0, 30.0, 40.0]] * b)
  joints = jnp.asarray(rng.uniform(0, 64, (b, j, 2)), jnp.float32)
  valid = jnp.asarray(rng.random((b, j)) > 0.3, jnp.float32)
  batch = _make_batch(hm, box, joints, valid, stride=4, mask=jnp.array([1, 1, 1, 0]))
  assert batch["torso_map"].shape == (b, *hw) and batch["target"].shape == (b, *hw, j)
  assert float(batch["valid"][3].sum()) == 0.0
  params = _init(model, hm, batch["torso_map"])
  assert params["kernels"].shape == (2 * len(sk.limbs) + j, 31, 31)
  assert params["kernels"].dtype == jnp.float32
  params = jax.tree.map(lambda p: p + 0.3 * jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  lm = jax.jit(model.apply)({"params": params}, hm, batch["torso_map"])
  assert lm.shape == (b, *hw, j) and bool(jnp.isfinite(lm).all())
  loss, grads = jax.jit(jax.value_and_grad(sm.spatial_model_loss), static_argnums=1)(
    params, model.apply, hm, batch["torso_map"], batch["target"], batch["valid"]
  )
  assert np.isfinite(float(loss)) and float(loss) > 0
  for g in jax.tree.leaves(grads):
    assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0
  # bf16 compute dtype: same log-marginals up to the output rounding.
  model16 = sm.SpatialModel(
    num_joints=j, edges=sm.default_edges(sk), heatmap_hw=hw, dtype=jnp.bfloat16
  )
  lm16 = _apply(model16, params, hm, batch["torso_map"])
  assert lm16.dtype == jnp.bfloat16
  np.testing.assert_allclose(lm16.astype(jnp.float32), lm, rtol=2e-2, atol=2e-2)


def test_loss_ignores_invalid_joints():
  hw, j = (8, 8), 2
  model = sm.SpatialModel(num_joints=j, edges=sm.torso_edges(j), heatmap_hw=hw)
  rng = np.random.default_rng(5)
  hm = jnp.asarray(rng.random((2, *hw, j)), jnp.float32)
  torso = jnp.ones((2, *hw))
  params = _init(model, hm, torso)
  tgt = jnp.asarray(rng.random((2, *hw, j)), jnp.float32)
  valid = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  loss = _loss(params, model.apply, hm, torso, tgt, valid)
  tgt2 = tgt.at[0, ..., 1].set(jnp.asarray(rng.random(hw), jnp.float32))
  loss2 = _loss(params, model.apply, hm, torso, tgt2, valid)
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  # Untrained model = normalized unary: the loss is the cross-entropy against it.
  q = hm / hm.sum(axis=(1, 2), keepdims=True)
  t = tgt / tgt.sum(axis=(1, 2), keepdims=True)
  ce = -(t * jnp.log(q + 1e-6)).sum(axis=(1, 2))
  np.testing.assert_allclose(loss, (ce * valid).sum() / valid.sum(), rtol=1e-4)
