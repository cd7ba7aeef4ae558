"""Builders read what the photo shows (issue 18, class 9), and a quiet build.

* One rule for every decoded photo: its EXIF orientation is applied
  (`heatpose_jax.data.orientation`, as `PIL.ImageOps.exif_transpose`) by the builders'
  `image_hw` and checks, the input pipeline's decode (draft or not) and `Predictor`.
  Tested with JPEGs carrying each EXIF Orientation (1-8).
* LSP / LSPet: the image names say which dataset it is, and `joints.mat` must have
  that dataset's documented layout (LSP 3×14×N with flag 0 = visible, LSPet 14×3×N
  with flag 1 = visible); an LSPet file saved transposed is refused in one line
  naming the file and the shape, instead of being built with every flag inverted.
* `python -m data_prep.build` prints warnings and the progress bar, no INFO lines.
"""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import fake_datasets as fake
import numpy as np
import pytest
import scipy.io as sio
from PIL import Image, ImageOps

from data_prep import common, lsp
from heatpose_jax import predictor
from heatpose_jax.data import input_pipeline, orientation

ROOT = Path(__file__).resolve().parents[1]
# The transpose that stores an upright photo so that EXIF orientation `o` shows it upright.
STORE = {o: orientation.TRANSPOSES[{6: 8, 8: 6}.get(o, o)][0] for o in range(2, 9)}


def _blob(hw, xy, sigma=3.0) -> np.ndarray:
  """An (H, W, 3) uint8 black image with a white Gaussian spot at (x, y)."""
  ys, xs = np.mgrid[: hw[0], : hw[1]]
  spot = 255 * np.exp(-((xs - xy[0]) ** 2 + (ys - xy[1]) ** 2) / (2 * sigma**2))
  return np.repeat(spot[..., None], 3, -1).astype(np.uint8)


def _rotated_jpeg(shown: np.ndarray, o: int) -> bytes:
  """A JPEG that stores `shown` (the upright pixels) with EXIF Orientation `o`."""
  im = Image.fromarray(shown)
  stored = im if o == 1 else im.transpose(STORE[o])
  exif = Image.Exif()
  exif[0x0112] = o
  buf = io.BytesIO()
  stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
  return buf.getvalue()


def _centroid(image) -> np.ndarray:
  g = image[..., 0].astype(np.float64)
  g = np.where(g > 0.3 * g.max(), g, 0)
  ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
  return np.array([(xs * g).sum(), (ys * g).sum()]) / g.sum()


@pytest.mark.parametrize("o", range(1, 9))
def test_every_decoder_reads_the_photo_as_shown(o):
  hw, spot = (70, 90), (61.3, 23.7)  # sizes not divisible by the 4× draft
  shown = _blob(hw, spot)
  data = _rotated_jpeg(shown, o)
  with Image.open(io.BytesIO(data)) as im:
    assert orientation.exif_orientation(im) == o
    assert orientation.upright_size(im) == (90, 70)
    np.testing.assert_array_equal(
      np.asarray(orientation.upright(im)), np.asarray(ImageOps.exif_transpose(im))
    )
  # Builders (FLIC, MPII, LSP all measure images with it): the upright size.
  np.testing.assert_array_equal(common.image_hw(data, "photo.jpg"), [70, 90])
  # Predictor: the upright pixels.
  with Image.open(io.BytesIO(data)) as im:
    loaded = predictor.load_image(im)
  assert loaded.shape == (70, 90, 3)
  np.testing.assert_allclose(_centroid(loaded), spot, atol=0.3)
  # The pipeline, at full size and through the JPEG draft (4× smaller, partial
  # blocks on the reversed axes): the spot where the photo shows it.
  k = 4
  m = np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2]], np.float64)
  want = (np.array(spot) - (k - 1) / 2) / k
  for draft in (False, True):
    canvas = input_pipeline.decode_and_warp(data, m, (18, 23), use_draft=draft)
    np.testing.assert_allclose(_centroid(canvas), want, atol=0.15, err_msg=f"draft={draft}")
  full = input_pipeline.decode_and_warp(data, np.eye(2, 3), (70, 90))
  assert np.abs(full.astype(int) - loaded.astype(int)).max() <= 1


def test_a_damaged_or_odd_orientation_reads_as_stored():
  im = Image.new("RGB", (4, 3))
  exif = Image.Exif()
  exif[0x0112] = 9  # out of range: exif_transpose ignores it too
  buf = io.BytesIO()
  im.save(buf, format="JPEG", exif=exif.tobytes())
  with Image.open(io.BytesIO(buf.getvalue())) as back:
    assert orientation.exif_orientation(back) == 1 and orientation.upright_size(back) == (4, 3)


def _write_lspet(root: Path, shown_hw=(105, 140), spot=(130.0, 20.0)) -> np.ndarray:
  """An LSPet manual dir of 4 images; image 1 is a phone photo stored portrait
  (140 × 105 pixels, EXIF Orientation 6) that shows landscape (105 × 140), with
  its joints annotated on the photo as shown and a white spot at joint 0."""
  rng = np.random.default_rng(0)
  xy = np.stack([rng.uniform(10, 95, (4, 14)), rng.uniform(10, 95, (4, 14))], -1)
  xy[0, 0] = spot
  (root / "images").mkdir(parents=True)
  (root / "images" / "im00001.jpg").write_bytes(_rotated_jpeg(_blob(shown_hw, spot), 6))
  for k in range(1, 4):
    fake.write_jpeg(root / "images" / f"im{k + 1:05d}.jpg", (100, 100), seed=k)
  flag = np.ones((4, 14, 1))
  joints = np.concatenate([xy + 1, flag], -1).transpose(1, 2, 0)  # 14×3×N, 1-based
  sio.savemat(root / "joints.mat", {"joints": joints})
  return xy


def test_lsp_builder_keeps_joints_on_what_the_photo_shows(tmp_path):
  xy = _write_lspet(tmp_path / "manual")
  with Image.open(tmp_path / "manual" / "images" / "im00001.jpg") as im:
    assert im.size == (105, 140)  # stored portrait: x = 130 lies outside its 105 columns
  builder = fake.build(lsp.Lsp, tmp_path / "data", tmp_path / "manual")
  ex = fake.read_split(builder, "train")[0]
  np.testing.assert_array_equal(ex["image_hw"], [105, 140])
  assert ex["joints_valid"].all() and ex["joints_visible"].all()
  np.testing.assert_allclose(ex["joints"], xy[0], atol=1e-4)
  # The crop shows the spot at joint 0, as the photo does.
  out = input_pipeline.Crop(skeleton=lsp.SKELETON, crop_mode="extent", canvas_hw=(64, 64))(ex)
  j0 = list(lsp.SKELETON.model_indices).index(0)
  assert out["joints_valid"][j0] == 1
  np.testing.assert_allclose(_centroid(out["image"]), out["joints"][j0], atol=1.0)


def _build_cli(*args, timeout=120):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run(
    [sys.executable, "-m", "data_prep.build", "--dataset=lsp", *args],
    cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
  )  # fmt: skip


def _resave(mat: Path, transform) -> tuple:
  joints = transform(sio.loadmat(mat)["joints"])
  sio.savemat(mat, {"joints": joints})
  return joints.shape


def test_a_joints_file_in_the_other_datasets_layout_is_refused(tmp_path):
  # LSPet saved transposed (3×14×N, LSP's layout): read as LSP it inverts every flag.
  lspet = tmp_path / "lspet"
  fake.write_fake_lsp(lspet, n=4, layout="lspet", bad={})
  mat = lspet / "joints.mat"
  shape = _resave(mat, lambda a: a.transpose(1, 0, 2))
  assert shape == (3, 14, 4)
  with pytest.raises(common.DataError) as e:
    fake.build(lsp.Lsp, tmp_path / "d1", lspet)
  line = str(e.value)
  assert "\n" not in line and str(mat) in line and "(3, 14, 4)" in line and "14×3×N" in line
  # The CLI: exit 1, one line, nothing built.
  out = _build_cli(f"--manual_dir={lspet}", f"--data_dir={tmp_path / 'd2'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and str(mat) in last and "(3, 14, 4)" in last
  assert not list((tmp_path / "d2").rglob("dataset_info.json"))

  # LSP (im0001.jpg) with a 14×3×N file: refused alike.
  lsp_dir = tmp_path / "lsp"
  fake.write_fake_lsp(lsp_dir, n=4, layout="lsp", bad={})
  _resave(lsp_dir / "joints.mat", lambda a: a.transpose(1, 0, 2))
  with pytest.raises(common.DataError, match=r"shape \(14, 3, 4\).*3×14×N"):
    fake.build(lsp.Lsp, tmp_path / "d3", lsp_dir)

  # Both namings in one folder: which layout is meant cannot be told.
  Image.new("RGB", (8, 8)).save(lsp_dir / "images" / "im00001.jpg")
  with pytest.raises(common.DataError, match="both LSP .* and LSPet"):
    fake.build(lsp.Lsp, tmp_path / "d4", lsp_dir)


# An absl / Python-logging INFO line ("I1206 04:10:02.788637 ... file.py:711] ...").
_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d+ ", re.MULTILINE)


def test_build_cli_prints_warnings_and_progress_only(tmp_path):
  manual = tmp_path / "manual"
  fake.write_fake_lsp(manual, n=4, bad={1: "far_joints"})  # one warning to show
  out = _build_cli(f"--manual_dir={manual}", f"--data_dir={tmp_path / 'd'}")
  assert out.returncode == 3, out.stderr
  err = out.stderr.replace("\r", "\n")
  assert not _INFO.search(err) and " INFO " not in err, err
  assert "marking r_ankle" in err  # the warning is kept
  lines = out.stdout.strip().splitlines()  # our lines only: no TFDS banner
  assert lines[0].startswith("lsp/default/1.0.0 written to ") and len(lines) == 4, out.stdout
  # --verbosity=0 asks for the INFO lines.
  out = _build_cli(f"--manual_dir={manual}", f"--data_dir={tmp_path / 'e'}", "--verbosity=0")
  assert out.returncode == 3 and _INFO.search(out.stderr.replace("\r", "\n")), out.stderr
