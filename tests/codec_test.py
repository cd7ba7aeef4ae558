"""Heat-map codec: targets, decoding and the frames between them."""

import jax.numpy as jnp
import numpy as np
import pytest

from heatpose_jax.model import codec, losses


@pytest.mark.parametrize("stride", [1, 4, 8, 16])
def test_coarse_round_trip_within_half_pixel(stride):
  rng = np.random.default_rng(stride)
  h, w = 256 // stride, 320 // stride
  # Keep joints one heat-map pixel from the border so the peak is interior.
  joints = np.stack(
    [
      rng.uniform(stride * 1.5, w * stride - stride * 1.5, (8, 6)),
      rng.uniform(stride * 1.5, h * stride - stride * 1.5, (8, 6)),
    ],
    -1,
  ).astype(np.float32)
  c = codec.HeatmapCodec(stride, 1.5)
  assert c.heatmap_hw((256, 320)) == (h, w)
  maps = c.encode(jnp.asarray(joints), jnp.ones((8, 6)), (h, w))
  assert maps.shape == (8, h, w, 6)
  xy, peak = c.decode(maps)
  err = np.abs(np.asarray(xy) - joints)
  assert err.max() < 0.5, err.max()
  assert np.all(np.asarray(peak) > 0.6)
  # Without refinement the error is the quantization, at most s/2.
  xy0, _ = c.decode(maps, refine=False)
  assert np.abs(np.asarray(xy0) - joints).max() <= stride / 2 + 1e-4


def test_heatmap_frame_pixel_centres():
  # A 2x2 pool covers input pixels 0 and 1: its centre is x = 0.5.
  np.testing.assert_allclose(codec.heatmap_to_input(jnp.array([0.0, 3.0]), 2), [0.5, 6.5])
  np.testing.assert_allclose(codec.input_to_heatmap(jnp.array([0.5, 6.5]), 2), [0.0, 3.0])
  np.testing.assert_allclose(codec.heatmap_to_input(jnp.array([2.0]), 1), [2.0])


def test_fine_round_trip_in_window_frame():
  rng = np.random.default_rng(0)
  origin = rng.integers(-10, 200, (4, 5, 2)).astype(np.int32)
  joints = origin + rng.uniform(2, 33, (4, 5, 2)).astype(np.float32)
  c = codec.WindowCodec(36, 1.5)
  maps = c.encode(jnp.asarray(joints), jnp.ones((4, 5)), jnp.asarray(origin))
  assert maps.shape == (4, 5, 36, 36)
  xy, _ = c.decode(maps, jnp.asarray(origin))
  assert np.abs(np.asarray(xy) - joints).max() < 0.5


def test_invalid_joints_have_empty_targets():
  joints = jnp.array([[[10.0, 10.0], [20.0, 20.0]]])
  maps = codec.HeatmapCodec(4, 1.5).encode(joints, jnp.array([[1.0, 0.0]]), (8, 8))
  assert float(maps[..., 0].max()) == pytest.approx(1.0, abs=0.05)
  assert float(jnp.abs(maps[..., 1]).max()) == 0.0


def test_value_at_reads_the_map_at_the_nearest_heatmap_pixel():
  c = codec.HeatmapCodec(4)
  maps = jnp.zeros((1, 8, 8, 2)).at[0, 3, 5, 0].set(0.7).at[0, 0, 7, 1].set(0.2)
  # Input x = 4·5 + 1.5 = 21.5, y = 4·3 + 1.5 = 13.5 is the centre of pixel (5, 3).
  xy = jnp.array([[[21.5, 13.5], [100.0, -3.0]]])  # the second clips to the border
  np.testing.assert_allclose(np.asarray(c.value_at(maps, xy)), [[0.7, 0.2]])


def test_decoding_is_finite_on_flat_and_negative_maps():
  maps = jnp.stack([jnp.zeros((6, 6)), -jnp.ones((6, 6))])[None]
  xy, _ = codec.argmax_2d(maps)
  assert np.all(np.isfinite(np.asarray(xy)))


def test_masked_mse_hand_computed():
  pred = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0, 0].set(2.0).at[0, 1].set(5.0)
  target = jnp.zeros((1, 2, 2, 2))
  # Joint 0: one pixel off by 2 -> sum 4. Joint 1 is masked out.
  e = losses.fine_loss(pred, target, jnp.array([[1.0, 0.0]]))
  assert float(e) == pytest.approx(4.0)
  both = losses.fine_loss(pred, target, jnp.array([[1.0, 1.0]]))
  assert float(both) == pytest.approx((4.0 + 4 * 25.0) / 2)
  assert float(losses.fine_loss(pred, target, jnp.zeros((1, 2)))) == 0.0
  e3 = losses.phase_loss(jnp.array(1.0), jnp.array(2.0), (1.0, 0.1))
  assert float(e3) == pytest.approx(1.2)
  # A zero weight drops its term: a NaN there does not reach the loss.
  assert float(losses.phase_loss(jnp.array(jnp.nan), jnp.array(2.0), (0.0, 1.0))) == 2.0


def test_coarse_loss_takes_nhwc():
  a = jnp.zeros((2, 4, 4, 3)).at[:, :, :, 2].set(1.0)
  e = losses.coarse_loss(a, jnp.zeros_like(a), jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
  assert float(e) == pytest.approx(16.0 * 2 / 4)


def test_window_samples_are_the_coarse_maps_at_the_window_pixels():
  # A map linear in (u, v) is interpolated exactly: value = u + 10 v at the window
  # pixel's heat-map coordinates (input x - (s - 1) / 2) / s, clamped at the edges.
  stride, size = 4, 6
  u, v = np.meshgrid(np.arange(8.0), np.arange(5.0))
  heat = jnp.asarray(np.stack([u + 10 * v, -(u + 10 * v)], -1)[None], jnp.float32)  # (1,5,8,2)
  origin = jnp.asarray([[[3.0, 2.0], [20.0, 13.0]]])  # (1, J=2, 2)
  got = np.asarray(codec.window_samples(heat, origin, size, stride))
  assert got.shape == (1, 2, size, size)
  for j, sign in enumerate((1, -1)):
    ox, oy = np.asarray(origin[0, j])
    cols = np.clip((ox + np.arange(size) - 1.5) / stride, 0, 7)
    rows = np.clip((oy + np.arange(size) - 1.5) / stride, 0, 4)
    want = sign * (cols[None, :] + 10 * rows[:, None])
    np.testing.assert_allclose(got[0, j], want, atol=1e-5)


def test_fused_decoding_takes_the_fine_peak_the_coarse_maps_support():
  c = codec.WindowCodec(size=16, sigma=1.0)
  origin = jnp.zeros((1, 2, 2))
  # Two fine peaks per window: 0.9 at x = 3, 0.8 at x = 12 (row 8).
  fine = c.encode(jnp.asarray([[[3.0, 8.0], [3.0, 8.0]]]), jnp.ones((1, 2)), origin) * 0.9
  fine = fine + c.encode(jnp.asarray([[[12.0, 8.0], [12.0, 8.0]]]), jnp.ones((1, 2)), origin) * 0.8
  alone, _ = c.decode(fine, origin)
  np.testing.assert_allclose(alone[0, :, 0], [3.0, 3.0], atol=0.01)
  # The coarse maps believe in the right-hand limb for joint 0 and in nothing for
  # joint 1 (zero everywhere: the fine maps alone decide).
  prior = jnp.zeros((1, 2, 16, 16)).at[0, 0, :, 9:].set(1.0)
  fused, _ = c.decode(fine, origin, prior=prior)
  np.testing.assert_allclose(fused[0, :, 0], [12.0, 3.0], atol=0.01)
