"""What a user of a trained run does: `Predictor` from Python on paths, arrays,
PIL images and lists; `experiments.predict` on a folder and a video;
`experiments.export` reloaded with `jax.export.deserialize`; `experiments.browse_dataset`."""

import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from heatpose_jax import Predictor, from_config
from heatpose_jax.configs import synthetic as synthetic_config
from heatpose_jax.data import synthetic
from heatpose_jax.model import codec, inference

# The tests sharing the session fixture `tiny_run` run on one xdist worker (built once).
pytestmark = pytest.mark.xdist_group("tiny_run")

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
  return run_cli(*args, devices=1, timeout=timeout)


def _photo(seed=7, hw=(90, 120)):
  return synthetic.render_example(np.random.default_rng(seed), *hw)["image"]


@pytest.fixture(scope="module")
def predictor(tiny_run):
  return Predictor.from_workdir(str(tiny_run))


def test_predictor_takes_paths_arrays_pil_and_lists(predictor, tmp_path):
  photo = _photo()
  path = tmp_path / "photo.png"
  Image.fromarray(photo).save(path)
  from_array = predictor(photo)
  assert from_array["joints"].shape == (14, 2) and from_array["joints"].dtype == np.float32
  assert list(from_array["names"]) == list(
    from_config.skeleton(synthetic_config.get_config()).model_joints
  )
  assert np.all((from_array["scores"] >= 0) & (from_array["scores"] <= 1))
  assert from_array["image_hw"] == (90, 120) and from_array["step"] == 4
  for other in (predictor(str(path)), predictor(Image.open(path))):
    np.testing.assert_allclose(other["joints"], from_array["joints"], atol=1e-4)
  many = predictor([photo, str(path), _photo(8, (40, 200))])
  assert isinstance(many, list) and len(many) == 3
  np.testing.assert_allclose(many[0]["joints"], from_array["joints"], atol=1e-4)
  assert many[2]["image_hw"] == (40, 200)


def test_joints_come_back_in_the_image_frame(predictor):
  # The canvas estimate, mapped by the letterbox's canvas → image affine.
  photo = _photo()
  canvas, c2i = inference.letterbox(photo, (64, 64))
  live = jax.jit(
    functools.partial(inference.predict, predictor.model, fuse_coarse=predictor.fuse_coarse)
  )
  xy = np.asarray(live(predictor.params, canvas[None])["cascade"][0], np.float64)
  np.testing.assert_allclose(predictor(photo)["joints"], xy @ c2i[:, :2].T + c2i[:, 2], atol=1e-3)
  # The letterbox: 120 px wide → 64 px, centred vertically (pixel centres at integers).
  np.testing.assert_allclose(c2i[:, :2], np.eye(2) * 120 / 64)
  np.testing.assert_allclose(c2i[:, 2], [59.5 - 31.5 * 120 / 64, 44.5 - 31.5 * 120 / 64])


def _mirrored(xy, perm, width):
  """Estimates `(B, J, 2)` of a canvas → those of its mirror (x → W − 1 − x, sides swapped)."""
  xy = np.asarray(xy)
  return np.stack([width - 1 - xy[..., 0], xy[..., 1]], axis=-1)[:, perm]


def test_the_flip_test_averages_an_image_with_its_mirror(predictor):
  model, params = predictor.model, predictor.params
  perm = tuple(int(i) for i in predictor.skeleton.flip_permutation)
  assert perm != tuple(range(len(perm)))  # the synthetic skeleton has sides
  canvas, c2i = inference.letterbox(_photo(), (64, 64))
  canvases = np.stack([canvas, np.asarray(_photo(9, (64, 64)))])
  flipped = jax.jit(functools.partial(inference.predict, model, flip_perm=perm, keep_heatmaps=True))
  a = jax.device_get(flipped(params, canvases))
  # The coarse maps: the image's averaged with its mirror's, mirrored back, sides swapped.
  maps = jax.jit(
    lambda x: model.apply({"params": params}, x, train=False, method="coarse_heatmaps")
  )
  expected = (maps(canvases) + maps(canvases[:, :, ::-1])[:, :, ::-1][..., list(perm)]) / 2
  np.testing.assert_allclose(a["coarse_heatmaps"], expected, atol=1e-5)
  # So its estimates mirror exactly: the mirror's are the image's, mirrored.
  b = jax.device_get(flipped(params, canvases[:, :, ::-1]))
  for key in ("coarse", "cascade"):
    np.testing.assert_allclose(b[key], _mirrored(a[key], perm, 64), atol=1e-3, err_msg=key)
  np.testing.assert_allclose(b["scores"], a["scores"][:, list(perm)], atol=1e-5)
  plain = jax.device_get(jax.jit(functools.partial(inference.predict, model))(params, canvases))
  assert np.abs(plain["cascade"] - a["cascade"]).max() > 1e-3  # two estimates averaged
  # Predictor(flip_test=True) and its exported function give the same estimate.
  p = Predictor(
    model, params, skeleton=predictor.skeleton, input_hw=(64, 64), step=4, flip_test=True
  )
  xy = np.asarray(a["cascade"][0], np.float64) @ c2i[:, :2].T + c2i[:, 2]
  np.testing.assert_allclose(p(_photo())["joints"], xy, atol=1e-3)
  served = p.export().call(canvases)
  np.testing.assert_allclose(served["joints"], a["cascade"], atol=1e-4)


def test_fuse_coarse_decodes_the_fine_maps_weighted_by_the_coarse_maps(tiny_run, predictor):
  model, params = predictor.model, predictor.params
  canvases = np.stack([inference.letterbox(_photo(seed), (64, 64))[0] for seed in (7, 9)])
  res = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, canvases)
  # The fused estimate: the peak of max(fine, 0) · max(coarse in the window, 0), or of
  # the fine maps where that product is zero everywhere.
  prior = np.asarray(
    codec.window_samples(
      res.coarse_heatmaps, res.window_origin, model.fine_codec.size, model.coarse_codec.stride
    )
  )
  fine = np.asarray(res.fine_heatmaps)
  product = np.maximum(fine, 0) * np.maximum(prior, 0)
  fusing = product.max((-2, -1), keepdims=True) > 0
  assert fusing.any()
  product = np.where(fusing, product, fine)
  fused = jax.device_get(
    jax.jit(functools.partial(inference.predict, model, fuse_coarse=True))(params, canvases)
  )
  b, j, s, _ = product.shape
  peak = product.reshape(b, j, s * s).argmax(-1)
  cell = np.stack([peak % s, peak // s], -1) + np.asarray(res.window_origin)
  assert np.abs(fused["cascade"] - cell).max() <= 0.5  # the sub-pixel step stays in the cell
  # Predictor: the run's config.eval.fuse_coarse unless told; its results say which.
  config = from_config.load_run_config(str(tiny_run))
  assert predictor.fuse_coarse == config.eval.fuse_coarse
  p = Predictor.from_workdir(str(tiny_run), fuse_coarse=True)
  photo = _photo()
  _, c2i = inference.letterbox(photo, (64, 64))
  xy = np.asarray(fused["cascade"][0], np.float64) @ c2i[:, :2].T + c2i[:, 2]
  np.testing.assert_allclose(p(photo)["joints"], xy, atol=1e-3)


def test_multi_scale_and_bad_inputs(tiny_run):
  p = Predictor.from_workdir(str(tiny_run), scales=(0.8, 1.0, 1.25))
  assert p(_photo())["joints"].shape == (14, 2)
  both = Predictor.from_workdir(str(tiny_run), scales=(0.8, 1.0, 1.25), flip_test=True)
  assert np.abs(both(_photo())["joints"] - p(_photo())["joints"]).max() > 1e-3
  with pytest.raises(ValueError, match="include 1.0"):
    Predictor.from_workdir(str(tiny_run), scales=(0.5,))
  with pytest.raises(ValueError, match="positive"):
    Predictor.from_workdir(str(tiny_run), scales=(0.0, 1.0))
  with pytest.raises(ValueError, match="uint8"):
    p(np.zeros((10, 10, 3), np.int64))
  with pytest.raises(ValueError, match="not a readable image"):
    p(str(REPO / "README.md"))


def test_a_config_that_does_not_fit_the_checkpoint_names_both_shapes(tiny_run):
  other = synthetic_config.get_config("tiny")
  other.model.width = 0.25  # the same layers as tiny_run's, twice as wide
  with pytest.raises(ValueError, match=r"parameter .* the config's model has shape .* has \("):
    Predictor.from_workdir(str(tiny_run), config=other)


def test_predict_cli_on_a_folder_skips_bad_files(tiny_run, tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(_photo(1)).save(photos / "first.jpg")
  Image.fromarray(_photo(2)).save(photos / "second.png")
  (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  out = tmp_path / "out"
  r = _cli(
    "experiments.predict", f"--workdir={tiny_run}", f"--images={photos}", f"--output_dir={out}"
  )
  assert r.returncode == 3, r.stderr[-3000:]
  assert "broken.jpg" in r.stdout and "skipped" in r.stderr
  assert sorted(p.name for p in out.iterdir()) == ["first.png", "predictions.json", "second.png"]
  data = json.loads((out / "predictions.json").read_text())
  assert [Path(p["image"]).name for p in data["predictions"]] == ["first.jpg", "second.png"]
  assert len(data["skipped"]) == 1 and data["checkpoint_step"] == 4
  joints = data["predictions"][0]["joints"]
  assert len(joints) == 14 and all(0 <= v[2] <= 1 for v in joints.values())
  overlay = np.asarray(Image.open(out / "first.png"))
  assert min(overlay.shape[:2]) >= 256  # readable, not the 90×120 source size


def test_predict_cli_on_a_video(tiny_run, tmp_path, monkeypatch):
  import imageio.v2 as imageio

  monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # no fork of this JAX process
  clip = tmp_path / "walk.mp4"
  with imageio.get_writer(clip, fps=8, macro_block_size=1) as w:
    for i in range(5):
      w.append_data(_photo(i, (64, 96)))
  out = tmp_path / "out"
  r = _cli("experiments.predict", f"--workdir={tiny_run}", f"--video={clip}", f"--output_dir={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  data = json.loads((out / "walk.json").read_text())
  assert len(data["frames"]) == 5 and data["fps"] == 8
  assert [f["frame"] for f in data["frames"]] == list(range(5))
  assert len(data["frames"][0]["joints"]) == 14
  with imageio.get_reader(out / "walk.mp4", "ffmpeg") as reader:
    frames = [f for f in reader]  # list() would ask len(), which is inf for ffmpeg
  assert len(frames) == 5 and frames[0].shape[:2] == (64, 96)


def test_export_reloads_and_equals_the_live_predictor(tiny_run, predictor, tmp_path):
  out = tmp_path / "predictor.jax"
  # Lowered for two platforms: the CPU-only lowerings (`image_ops.cpu_or_default`)
  # are then chosen when the program runs, and this CPU runs the CPU one.
  r = _cli("experiments.export", f"--workdir={tiny_run}", f"--output={out}", "--platforms=cpu,cuda")
  assert r.returncode == 0, r.stderr[-3000:]
  exported = jax.export.deserialize(out.read_bytes())
  assert exported.platforms == ("cpu", "cuda")
  signature = json.loads(out.with_suffix(".json").read_text())
  assert signature["input"]["shape"] == ["B", 64, 64, 3] and len(signature["names"]) == 14
  live = jax.jit(
    functools.partial(inference.predict, predictor.model, fuse_coarse=predictor.fuse_coarse)
  )
  for batch in (1, 3):  # the batch axis is symbolic
    canvases = np.stack([inference.letterbox(_photo(i), (64, 64))[0] for i in range(batch)])
    got, want = exported.call(canvases), live(predictor.params, canvases)
    np.testing.assert_allclose(np.asarray(got["joints"]), np.asarray(want["cascade"]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(got["scores"]), np.asarray(want["scores"]), atol=1e-5)


def test_browse_dataset_draws_a_contact_sheet(tiny_data, tmp_path):
  data_dir, name = tiny_data
  for augment in ("--noaugment", "--augment"):
    out = tmp_path / f"sheet{augment}.png"
    r = _cli(
      "experiments.browse_dataset",
      "--dataset=synthetic",
      f"--tfds_config={name}",
      f"--data_dir={data_dir}",
      "--num=8",
      augment,
      f"--output={out}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[0] >= 192 and sheet.shape[1] >= 6 * 192


def test_serving_restores_into_a_parameters_only_tree(tiny_config):
  """`from_config.abstract_params` (what Predictor and evaluation restore into) is
  the training state's parameter tree, built without any optimizer."""
  config, mesh = tiny_config(), jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  served = from_config.abstract_params(config, mesh)
  trained = from_config.abstract_state(config, mesh).params
  assert jax.tree.structure(served) == jax.tree.structure(trained)
  for a, b in zip(jax.tree.leaves(served), jax.tree.leaves(trained), strict=True):
    assert (a.shape, a.dtype, a.sharding) == (b.shape, b.dtype, b.sharding)
