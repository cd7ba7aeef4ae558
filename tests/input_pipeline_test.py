"""Tests of heatpose_jax.data.input_pipeline on in-memory lists of small JPEG examples."""

import io
import json
import os
import pickle

import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

from heatpose_jax.core import sharding
from heatpose_jax.data import canvas_cache
from heatpose_jax.data import input_pipeline as ip
from heatpose_jax.data import joints as joints_lib

LSP = joints_lib.SKELETONS["lsp"]
FLIC = joints_lib.SKELETONS["flic"]


def _jpeg(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def _example(index, skeleton, hw=(240, 320), blob=(200.0, 90.0), blob_joint=0, seed=0):
  """Dataset features with a white blob (σ = 3 px) at annotated joint `blob_joint`."""
  rng = np.random.default_rng(seed + index)
  h, w = hw
  a = len(skeleton.annotated)
  joints = np.stack([rng.uniform(0.3 * w, 0.7 * w, a), rng.uniform(0.3 * h, 0.7 * h, a)], -1)
  joints[blob_joint] = blob
  ys, xs = np.mgrid[:h, :w]
  spot = np.exp(-((xs - blob[0]) ** 2 + (ys - blob[1]) ** 2) / (2 * 3.0**2))
  image = np.repeat((255 * spot)[..., None], 3, -1).astype(np.uint8)
  valid = np.ones(a, bool)
  valid[-1] = index % 2 == 0  # some missing joints
  return {
    "image": _jpeg(image),
    "image_hw": np.array(hw, np.int32),
    "index": np.int64(index),
    "joints": np.where(valid[:, None], joints, 0).astype(np.float32),
    "joints_valid": valid,
    "joints_visible": valid & (np.arange(a) % 3 != 0),
    "center": np.array([w / 2 + 5, h / 2 - 3], np.float32),
    "scale": np.float32(h / 200 * 0.8),
    "head_box": np.array([10, 10, 30, 40], np.float32),
    "torso_box": np.array([w / 2 - 40, h / 2 - 50, w / 2 + 30, h / 2 + 40], np.float32),
    "head_size": np.float32(0.6 * np.hypot(20, 30)),
    "torso_size": np.float32(50.0),
  }


def _centroid(image):
  g = image[..., 0].astype(np.float64)
  g = np.where(g > 0.3 * g.max(), g, 0)
  ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
  return np.array([(xs * g).sum(), (ys * g).sum()]) / g.sum()


# crop_mode -> (skeleton, canvas_hw, kwargs, k = canvas px per image px, person centre).
def _expected(mode, ex, canvas_hw, kwargs):
  h, w = canvas_hw
  if mode == "torso":
    x1, y1, x2, y2 = ex["torso_box"]
    return kwargs.get("image_scale", 0.5), np.array([(x1 + x2) / 2, (y1 + y2) / 2])
  if mode == "unnormalized":
    return kwargs["image_scale"], ex["center"]
  box = {"scale_normalized": 1.25, "extent": 1.0}[mode]
  return min(h, w) / (200 * ex["scale"] * box), ex["center"]


MODES = {
  "torso": (FLIC, (60, 80), {"image_scale": 0.25}),  # 4x shrink: JPEG draft path
  "scale_normalized": (LSP, (64, 64), {}),
  "unnormalized": (LSP, (64, 64), {"image_scale": 0.5}),
  "extent": (LSP, (48, 40), {}),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_crop_maps_joint_and_image(mode):
  skeleton, canvas_hw, kwargs = MODES[mode]
  # FLIC's model joint 0 (nose) is annotated joint 10: checks the model order too.
  blob_joint = skeleton.model_indices[0]
  ex = _example(0, skeleton, blob_joint=blob_joint)
  out = ip.crop_example(ex, skeleton=skeleton, crop_mode=mode, canvas_hw=canvas_hw, **kwargs)
  h, w = canvas_hw
  k, centre = _expected(mode, ex, canvas_hw, kwargs)
  c = np.array([(w - 1) / 2, (h - 1) / 2])
  expected = c + k * (np.asarray(ex["joints"][blob_joint], np.float64) - centre)
  np.testing.assert_allclose(out["joints"][0], expected, atol=1e-3)
  assert out["joints_valid"][0] == 1
  # The image moved with the joint (bilinear resampling, JPEG noise: within 1 px).
  np.testing.assert_allclose(_centroid(out["image"]), expected, atol=1.0)
  np.testing.assert_allclose(out["head_size"], ex["head_size"] * k, rtol=1e-5)
  np.testing.assert_allclose(out["torso_size"], ex["torso_size"] * k, rtol=1e-5)
  tb = ex["torso_box"]
  np.testing.assert_allclose(out["torso_box"][:2], c + k * (tb[:2] - centre), atol=1e-3)
  # canvas_to_image maps canvas joints back to the original ones.
  m = out["canvas_to_image"]
  valid = out["joints_valid"] > 0
  back = out["joints"] @ m[:, :2].T + m[:, 2]
  np.testing.assert_allclose(back[valid], ex["joints"][skeleton.model_indices][valid], atol=1e-3)
  assert out["image"].shape == (*canvas_hw, 3) and out["image"].dtype == np.uint8


def test_draft_matches_full_decode():
  skeleton, canvas_hw, kwargs = MODES["torso"]
  ex = _example(0, skeleton, blob_joint=skeleton.model_indices[0])
  fast = ip.crop_example(ex, skeleton=skeleton, crop_mode="torso", canvas_hw=canvas_hw, **kwargs)
  slow = ip.crop_example(
    ex, skeleton=skeleton, crop_mode="torso", canvas_hw=canvas_hw, use_draft=False, **kwargs
  )
  np.testing.assert_allclose(_centroid(fast["image"]), _centroid(slow["image"]), atol=0.5)


def test_outside_joints_are_invalid():
  ex = _example(0, LSP, blob=(5.0, 5.0))
  out = ip.crop_example(
    ex, skeleton=LSP, crop_mode="unnormalized", canvas_hw=(32, 32), image_scale=0.5
  )
  assert out["joints_valid"][0] == 0 and out["joints_visible"][0] == 0
  np.testing.assert_array_equal(out["joints"][0], [0, 0])


def _source(n, skeleton=LSP, hw=(48, 64)):
  return [_example(i, skeleton, hw=hw, blob=(30.0, 20.0)) for i in range(n)]


KW = dict(skeleton=LSP, crop_mode="extent", canvas_hw=(32, 32))
CROP = ip.Crop(**KW)


def test_eval_covers_every_example_once():
  source = _source(7)
  for count in (1, 2):
    seen, pads = [], 0
    for p in range(count):
      ds = ip.make_dataset(
        source, crop=CROP, global_batch_size=4, shuffle=False, num_epochs=1, drop_remainder=False,
        process_index=p, process_count=count,
      )  # fmt: skip
      batches = list(ds)
      assert len(batches) == 2
      for b in batches:
        assert b["_mask"].shape == (4 // count,)
        seen += list(b["index"][b["_mask"]])
        pads += int((~b["_mask"]).sum())
        assert np.all(b["joints_valid"][~b["_mask"]] == 0)
    assert sorted(seen) == list(range(7)) and pads == 1


def test_training_batches_follow_contract():
  ds = ip.make_dataset(_source(5), crop=CROP, global_batch_size=4, shuffle=True, seed=3)
  it = iter(ds)
  batches = [next(it) for _ in range(4)]  # runs past the end of the data: repeats
  j = LSP.num_joints
  want = {
    "image": ((4, 32, 32, 3), np.uint8),
    "joints": ((4, j, 2), np.float32),
    "joints_valid": ((4, j), np.float32),
    "joints_visible": ((4, j), np.float32),
    "head_size": ((4,), np.float32),
    "torso_size": ((4,), np.float32),
    "torso_box": ((4, 4), np.float32),
    "canvas_to_image": ((4, 2, 3), np.float32),
    "index": ((4,), np.int32),
    "_mask": ((4,), np.bool_),
  }
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == want
    assert b["_mask"].all()
  order = np.concatenate([b["index"] for b in batches])
  assert sorted(order[:5]) == list(range(5))  # epoch 1 is a permutation
  assert not np.array_equal(order[:5], np.arange(5))


def test_hosts_get_disjoint_halves_of_each_global_batch():
  source = _source(10)
  args = dict(crop=CROP, global_batch_size=4, shuffle=True, seed=1, num_epochs=2)
  whole = [
    set(b["index"]) for b in ip.make_dataset(source, **args, process_index=0, process_count=1)
  ]
  halves = [
    [set(b["index"]) for b in ip.make_dataset(source, **args, process_index=p, process_count=2)]
    for p in range(2)
  ]
  assert len(whole) == 5 and len(halves[0]) == len(halves[1]) == 5
  for g, h0, h1 in zip(whole, *halves, strict=True):
    assert len(h0) == len(h1) == 2 and not h0 & h1 and h0 | h1 == g


def test_canvas_cache_round_trip_and_staleness(tmp_path):
  source = _source(6)
  path = str(tmp_path / "cache")
  cache = canvas_cache.build_canvas_cache(source, crop=CROP, path=path)
  assert len(cache) == 6
  for i in (0, 5):
    ref = ip.crop_example(source[i], **KW)
    got = cache[i]
    assert set(got) == set(ref)
    for k in ref:
      np.testing.assert_array_equal(got[k], ref[k])
      assert got[k].dtype == np.asarray(ref[k]).dtype
  args = dict(
    crop=CROP, global_batch_size=4, shuffle=True, seed=2, num_epochs=1, drop_remainder=False
  )
  for a, b in zip(ip.make_dataset(source, **args), ip.make_dataset(cache, **args), strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Reused when nothing changed (same files), rebuilt when the source or crop changes.
  mtime = os.path.getmtime(os.path.join(path, "image.npy"))
  assert len(canvas_cache.build_canvas_cache(source, crop=CROP, path=path)) == 6
  assert os.path.getmtime(os.path.join(path, "image.npy")) == mtime
  assert len(canvas_cache.build_canvas_cache(source[:4], crop=CROP, path=path)) == 4
  cache = canvas_cache.build_canvas_cache(
    source[:4], crop=ip.Crop(**{**KW, "canvas_hw": (16, 24)}), path=path
  )
  assert cache[0]["image"].shape == (16, 24, 3)
  with open(os.path.join(path, "manifest.json")) as f:
    assert json.load(f)["params"]["canvas_hw"] == [16, 24]
  assert not [f for f in os.listdir(path) if ".tmp-" in f]
  clone = pickle.loads(pickle.dumps(cache))
  np.testing.assert_array_equal(clone[3]["image"], cache[3]["image"])
  with pytest.raises(ValueError, match="canvas cache"):
    ip.make_dataset(cache, crop=CROP, global_batch_size=2, shuffle=False)


def test_worker_processes_give_same_batches():
  from absl import flags

  # Grain's workers read absl flags: outside an absl app the caller marks them parsed.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  source = _source(6)
  args = dict(crop=CROP, global_batch_size=2, shuffle=True, seed=4, num_epochs=1)
  ref = list(ip.make_dataset(source, **args))
  it = iter(ip.make_dataset(source, **args, worker_count=1))
  got = list(it)
  it.close()
  assert len(got) == len(ref) == 3
  for a, b in zip(ref, got, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["index"], b["index"])


def test_to_global_array_shards_over_devices():
  ds = ip.make_dataset(_source(8), crop=CROP, global_batch_size=8, shuffle=False, num_epochs=1)
  batch = next(iter(ds))
  mesh = sharding.make_mesh()
  arrays = sharding.to_global_array(batch, mesh)
  want = NamedSharding(mesh, PartitionSpec("data"))
  for k, v in arrays.items():
    assert v.shape == batch[k].shape and v.sharding == want
    assert len(v.addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(v), batch[k])


def test_iterator_state_resumes():
  ds = ip.make_dataset(_source(10), crop=CROP, global_batch_size=4, shuffle=True, seed=1)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = next(it)
  resumed = iter(ds)
  resumed.set_state(state)
  got = next(resumed)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


def test_training_label_noise_is_fixed_per_example_and_evaluation_scores_clean_labels():
  from heatpose_jax.configs import synthetic as synthetic_config
  from heatpose_jax.data import synthetic_dataset

  from_config = pytest.importorskip("heatpose_jax.from_config")
  config = synthetic_config.get_config("tiny,noise=2.0")
  cfg = synthetic_dataset.custom_config("tiny", label_noise=1.0)
  exs = [synthetic_dataset.make_example(cfg, "train", i) for i in range(40)]
  train_kw = from_config.crop(config, training=True).kwargs()
  eval_kw = from_config.crop(config).kwargs()
  diffs = []
  for ex in exs:
    a, b = ip.crop_example(ex, **train_kw), ip.crop_example(ex, **train_kw)
    np.testing.assert_array_equal(a["joints"], b["joints"])  # the same noisy label every epoch
    clean = ip.crop_example(ex, **eval_kw)
    stored = ip.crop_example(ex, **{**eval_kw, "clean_labels": False})
    v = clean["joints_valid"] > 0
    k = float(clean["canvas_to_image"][0, 0])  # image px per canvas px
    # Evaluation reads joints_clean: the dataset's own 1-px noise is gone.
    np.testing.assert_allclose(
      clean["joints"][v], (ex["joints_clean"][v] - ex["center"]) / k + 31.5, atol=1e-3
    )
    assert np.abs(stored["joints"][v] - clean["joints"][v]).max() > 0
    diffs.append((a["joints"] - stored["joints"])[v])
  # Training: the config's noise (σ = 2 canvas px) on top of the stored labels.
  assert 1.7 < np.std(np.concatenate(diffs)) < 2.3
