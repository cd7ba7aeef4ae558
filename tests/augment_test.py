"""Tests of heatpose_jax.data.augment: image and joints move together under one affine."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax.data import augment

HW = (24, 32)  # non-square, so that x/y mix-ups show


def _blob_image(points, hw=HW, sigma=1.2):
  """(1, H, W, len(points)) float image, one Gaussian blob per channel at (x, y)."""
  h, w = hw
  ys, xs = np.mgrid[:h, :w]
  chans = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points]
  return (255 * np.stack(chans, -1)[None]).astype(np.float32)


def _centroid(channel):
  """(x, y) intensity centroid of a (H, W) image."""
  channel = np.asarray(channel, np.float64)
  ys, xs = np.mgrid[: channel.shape[0], : channel.shape[1]]
  return np.array([(xs * channel).sum(), (ys * channel).sum()]) / channel.sum()


CASES = {
  "rotation": (math.radians(17), 1.0, False),
  "scale_up": (0.0, 1.4, False),
  "scale_down": (0.0, 0.6, False),
  "flip": (0.0, 1.0, True),
  "composed": (math.radians(-20), 1.3, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blob_lands_on_transformed_joint(name):
  theta, scale, flip = CASES[name]
  points = np.array([[20.0, 8.0], [11.0, 15.0]])  # joint 0 = "left", joint 1 = "right"
  perm = np.array([1, 0])
  image = _blob_image(points)
  a = augment.make_affine(jnp.array([theta]), jnp.array([scale]), jnp.array([flip]), HW)
  warped = np.asarray(augment.warp_images(jnp.asarray(image), a))[0]
  joints, valid = augment.transform_joints(
    jnp.asarray(points[None], jnp.float32),
    jnp.ones((1, 2)),
    a,
    jnp.array([flip]),
    perm,
    canvas_hw=HW,
  )
  assert np.all(np.asarray(valid) == 1)
  for j in range(2):
    # On a flip, label j is the blob drawn for joint perm[j].
    src_channel = perm[j] if flip else j
    np.testing.assert_allclose(_centroid(warped[..., src_channel]), joints[0, j], atol=1.0)


def test_flip_swaps_sides_and_mirrors():
  points = np.array([[20.0, 8.0], [11.0, 15.0]], np.float32)
  a = augment.make_affine(jnp.zeros(1), jnp.ones(1), jnp.array([True]), HW)
  joints, _ = augment.transform_joints(
    jnp.asarray(points[None]),
    jnp.ones((1, 2)),
    a,
    jnp.array([True]),
    np.array([1, 0]),
    canvas_hw=HW,
  )
  w = HW[1]
  # Left label now sits at the mirror image of the old right joint: x → W − 1 − x.
  np.testing.assert_allclose(joints[0, 0], [w - 1 - 11.0, 15.0], atol=1e-5)
  np.testing.assert_allclose(joints[0, 1], [w - 1 - 20.0, 8.0], atol=1e-5)


def test_identity_is_exact():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (2, *HW, 3), dtype=np.uint8)
  a, flip = augment.sample_affine(
    jax.random.key(1), 2, HW, max_rotation_deg=0.0, scale_range=(1.0, 1.0), flip_prob=0.0
  )
  assert not np.any(np.asarray(flip))
  out = augment.warp_images(jnp.asarray(image), a)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out), image.astype(np.float32))
  # A pure flip is exact too: it samples pixel centres, mirrored.
  a = augment.make_affine(jnp.zeros(2), jnp.ones(2), jnp.ones(2, bool), HW)
  out = augment.warp_images(jnp.asarray(image), a)
  np.testing.assert_array_equal(np.asarray(out), image[:, :, ::-1].astype(np.float32))


def test_matches_map_coordinates():
  rng = np.random.default_rng(1)
  image = rng.uniform(0, 255, (3, *HW, 2)).astype(np.float32)
  a, _ = augment.sample_affine(jax.random.key(3), 3, HW)
  out = np.asarray(augment.warp_images(jnp.asarray(image), a))
  inv = np.asarray(augment.invert_affine(a))
  ys, xs = np.mgrid[: HW[0], : HW[1]].astype(np.float32)
  for b in range(3):
    sx = inv[b, 0, 0] * xs + inv[b, 0, 1] * ys + inv[b, 0, 2]
    sy = inv[b, 1, 0] * xs + inv[b, 1, 1] * ys + inv[b, 1, 2]
    for c in range(2):
      ref = jax.scipy.ndimage.map_coordinates(image[b, ..., c], [sy, sx], order=1, mode="constant")
      np.testing.assert_allclose(out[b, ..., c], ref, atol=1e-2)


def test_outside_joints_become_invalid_and_zero():
  joints = jnp.array([[[1.0, 1.0], [15.5, 11.5]]])
  a = augment.make_affine(jnp.zeros(1), jnp.full(1, 1.5), jnp.zeros(1, bool), HW)
  out, valid = augment.transform_joints(
    joints, jnp.ones((1, 2)), a, jnp.zeros(1, bool), np.arange(2), canvas_hw=HW
  )
  np.testing.assert_array_equal(valid, [[0.0, 1.0]])
  np.testing.assert_array_equal(out[0, 0], [0.0, 0.0])
  np.testing.assert_allclose(out[0, 1], [15.5, 11.5], atol=1e-5)  # the centre stays


def _batch(b=8, j=2):
  rng = np.random.default_rng(2)
  return {
    "image": rng.integers(0, 256, (b, *HW, 3), dtype=np.uint8),
    "joints": rng.uniform(8, 16, (b, j, 2)).astype(np.float32),
    "joints_valid": np.ones((b, j), np.float32),
    "joints_visible": np.ones((b, j), np.float32),
    "head_size": np.full((b,), 5.0, np.float32),
    "torso_size": np.full((b,), 7.0, np.float32),
    "torso_box": np.tile(np.array([[10, 6, 20, 16]], np.float32), (b, 1)),
    "canvas_to_image": np.tile(np.array([[[2, 0, 3], [0, 2, 5]]], np.float32), (b, 1, 1)),
    "index": np.arange(b, dtype=np.int32),
    "_mask": np.ones((b,), bool),
  }


def test_augment_batch_is_deterministic_and_consistent():
  batch = _batch()
  perm = np.array([1, 0])
  fn = jax.jit(lambda k, x: augment.augment_batch(k, x, perm))
  out1 = fn(jax.random.key(5), batch)
  out2 = fn(jax.random.key(5), batch)
  out3 = fn(jax.random.key(6), batch)
  for k in batch:
    np.testing.assert_array_equal(out1[k], out2[k])
  assert not np.array_equal(out1["image"], out3["image"])
  np.testing.assert_array_equal(out1["index"], batch["index"])
  # canvas_to_image still maps each label to where it was in the original image.
  a, flip = augment.sample_affine(jax.random.key(5), 8, HW)
  flip = np.asarray(flip)
  assert 0 < flip.sum() < 8
  for b in range(8):
    m_new, m_old = np.asarray(out1["canvas_to_image"][b]), batch["canvas_to_image"][b]
    for j in range(2):
      if out1["joints_valid"][b, j]:
        src = batch["joints"][b, perm[j] if flip[b] else j]
        np.testing.assert_allclose(
          m_new[:, :2] @ np.asarray(out1["joints"][b, j]) + m_new[:, 2],
          m_old[:, :2] @ src + m_old[:, 2],
          atol=1e-3,
        )
  s = np.sqrt(np.abs(np.linalg.det(np.asarray(a)[:, :, :2])))
  np.testing.assert_allclose(out1["head_size"], 5.0 * s, rtol=1e-5)
  box = np.asarray(out1["torso_box"])
  assert np.all(box[:, 2] > box[:, 0]) and np.all(box[:, 3] > box[:, 1])


def test_torso_box_scales_about_centre():
  box = jnp.array([[10.0, 6.0, 20.0, 16.0]])
  a = augment.make_affine(jnp.zeros(1), jnp.full(1, 2.0), jnp.zeros(1, bool), HW)
  c = np.array([15.5, 11.5])
  np.testing.assert_allclose(
    augment.transform_boxes(box, a)[0],
    [*(c + 2 * (np.array([10, 6]) - c)), *(c + 2 * (np.array([20, 16]) - c))],
    atol=1e-5,
  )


def test_sharded_over_devices():
  devices = jax.devices()
  assert len(devices) == 8
  mesh = Mesh(np.array(devices), ("data",))
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  batch = _batch()
  sharded = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  fn = jax.jit(lambda k, x: augment.augment_batch(k, x, np.array([1, 0])))
  out = fn(jax.random.key(7), sharded)
  ref = fn(jax.random.key(7), batch)
  # Float rounding of 0–255 values (the two programs fuse differently).
  np.testing.assert_allclose(out["image"], ref["image"], rtol=2e-5, atol=1e-3)
  np.testing.assert_allclose(out["joints"], ref["joints"], atol=1e-4)
  assert out["image"].sharding.is_equivalent_to(sharding, 4)
