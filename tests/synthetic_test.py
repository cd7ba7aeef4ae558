"""Tests of the synthetic-people renderer (heatpose_jax.data.synthetic)."""

import numpy as np
import pytest
from PIL import Image

from heatpose_jax.data import synthetic, synthetic_paint

J = {n: i for i, n in enumerate(synthetic.SKELETON.annotated)}


def _render(i, size=64, seed=0, **kw):
  return synthetic.render_example(synthetic.example_rng(seed, "train", i), size, size, **kw)


@pytest.fixture(scope="module")
def examples():
  return [_render(i, size=96, distractor=i % 3 == 0) for i in range(60)]


def test_same_seed_same_example_and_different_index_differs():
  a, b, c = _render(7), _render(7), _render(8)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert not np.array_equal(a["image"], c["image"])
  assert not np.array_equal(a["joints_full"], c["joints_full"])
  # Splits and seeds are separate streams.
  d = synthetic.render_example(synthetic.example_rng(0, "test", 7), 64, 64)
  assert not np.array_equal(a["image"], d["image"])


def test_shapes_and_dtypes():
  ex = _render(0, size=48)
  assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype == np.uint8
  for key in ("joints", "joints_clean", "joints_full", "distractor_joints"):
    assert ex[key].shape == (14, 2) and ex[key].dtype == np.float32, key
  for key in ("joints_valid", "joints_visible"):
    assert ex[key].shape == (14,) and ex[key].dtype == np.bool_, key
  assert ex["head_box"].shape == ex["torso_box"].shape == (4,)
  assert ex["has_distractor"].dtype == np.bool_


def test_rectangular_images():
  ex = synthetic.render_example(synthetic.example_rng(0, "train", 0), 40, 72)
  assert ex["image"].shape == (40, 72, 3)


def test_valid_means_inside_and_missing_joints_are_zero(examples):
  for ex in examples:
    x, y = ex["joints_full"].T
    inside = (x >= -0.5) & (x < 95.5) & (y >= -0.5) & (y < 95.5)
    np.testing.assert_array_equal(ex["joints_valid"], inside)
    assert np.all(ex["joints_clean"][~inside] == 0) and np.all(ex["joints"][~inside] == 0)
    np.testing.assert_array_equal(ex["joints_clean"][inside], ex["joints_full"][inside])
    assert not np.any(ex["joints_visible"] & ~ex["joints_valid"])
  valid = np.stack([ex["joints_valid"] for ex in examples])
  assert valid.mean() > 0.9  # the person is mostly inside the image
  assert valid.sum(1).min() >= 7


def test_head_and_torso_boxes_contain_their_joints(examples):
  for ex in examples:
    j = ex["joints_full"]
    x1, y1, x2, y2 = ex["head_box"]
    for name in ("head_top", "upper_neck"):
      assert x1 <= j[J[name], 0] <= x2 and y1 <= j[J[name], 1] <= y2, name
    x1, y1, x2, y2 = ex["torso_box"]
    for name in ("l_shoulder", "r_shoulder", "l_hip", "r_hip"):
      assert x1 < j[J[name], 0] < x2 and y1 < j[J[name], 1] < y2, name


def test_figures_are_upright_with_plausible_proportions(examples):
  for ex in examples:
    j = ex["joints_full"]
    hips = (j[J["l_hip"]] + j[J["r_hip"]]) / 2
    shoulders = (j[J["l_shoulder"]] + j[J["r_shoulder"]]) / 2
    # y grows downwards: head above shoulders above hips.
    assert j[J["head_top"], 1] < shoulders[1] < hips[1]
    torso = np.linalg.norm(shoulders - hips)
    head = np.linalg.norm(j[J["head_top"]] - j[J["upper_neck"]])
    assert 0.3 < head / torso < 0.6
    for side in "lr":
      upper = np.linalg.norm(j[J[f"{side}_shoulder"]] - j[J[f"{side}_elbow"]])
      shin = np.linalg.norm(j[J[f"{side}_knee"]] - j[J[f"{side}_ankle"]])
      assert upper < 0.7 * torso and 0.6 * torso < shin < 0.9 * torso
  heights = [np.ptp(ex["joints_full"][:, 1]) for ex in examples]
  assert 0.35 * 96 < np.median(heights) < 0.95 * 96


def test_shapes_cover_their_geometry():
  # Primitives on a black canvas, painted white: 1 inside, 0 outside, in (x, y).
  def canvas():
    return synthetic_paint.Canvas(img=np.zeros((40, 50, 3), np.float32), noise=np.zeros((40, 50)))

  white = synthetic_paint.Paint(np.ones(3, np.float32))
  cv = canvas()
  synthetic_paint.capsule(cv, (10, 20), (40, 20), 3.0, white)
  img = cv.img[..., 0]
  assert img[20, 10] == img[20, 25] == img[22, 25] == img[20, 42] == 1.0  # (row, col)
  assert img[23, 25] == img[20, 43] == 0.5  # pixel centres on the edge: half covered
  assert img[25, 25] == img[20, 5] == img[20, 45] == 0.0
  cv = canvas()
  synthetic_paint.ellipse(cv, (25, 20), 10.0, 4.0, 0.0, white)  # long axis along x
  img = cv.img[..., 0]
  assert img[20, 16] == img[20, 34] == img[17, 25] == 1.0
  assert img[20, 15] == pytest.approx(0.5) and img[16, 25] == pytest.approx(0.5)
  assert img[20, 37] == img[15, 25] == 0.0
  cv = canvas()
  synthetic_paint.polygon(cv, [(10, 5), (30, 5), (30, 25), (10, 25)], 0.0, white)
  img = cv.img[..., 0]
  assert img[6, 11] == img[24, 29] == img[15, 20] == 1.0 and img[5, 20] == img[15, 30] == 0.5
  assert img[15, 32] == img[3, 20] == 0.0
  # Shapes drawn after the target mark the cover mask.
  cv = canvas()
  cv.over = np.zeros((40, 50), np.float32)
  synthetic_paint.capsule(cv, (10, 20), (40, 20), 3.0, white)
  np.testing.assert_array_equal(cv.over, cv.img[..., 0])


def test_distractor(examples):
  with_d = [ex for ex in examples if ex["has_distractor"]]
  without = [ex for ex in examples if not ex["has_distractor"]]
  assert with_d and without
  for ex in with_d:
    d = ex["distractor_joints"]
    assert np.abs(d).sum() > 0
    # A different person: its torso centre is away from the target's.
    tc = ex["joints_full"][[J["l_hip"], J["r_shoulder"]]].mean(0)
    dc = d[[J["l_hip"], J["r_shoulder"]]].mean(0)
    assert np.linalg.norm(tc - dc) > 5
    # Its centre is kept inside the image.
    assert -0.5 <= (d[:, 0].min() + d[:, 0].max()) / 2 < 95.5
  for ex in without:
    assert np.all(ex["distractor_joints"] == 0)


def test_visibility_tracks_occluders_and_self_occlusion():
  def hidden(exs):
    return sum(int((ex["joints_valid"] & ~ex["joints_visible"]).sum()) for ex in exs)

  def valid(exs):
    return sum(int(ex["joints_valid"].sum()) for ex in exs)

  occluded = [_render(i, size=64, occluders=True) for i in range(40)]
  alone = [_render(i, size=64, occluders=False) for i in range(40)]
  for ex in occluded + alone:
    assert not np.any(ex["joints_visible"] & ~ex["joints_valid"])
  # Without occluders, only the person's own parts hide joints (an arm behind
  # the torso, a hip behind a forearm): a few percent.
  assert 0 < hidden(alone) < 0.1 * valid(alone)
  assert hidden(occluded) > hidden(alone)


def test_label_noise_statistics():
  sigma = 1.5
  diffs = []
  for i in range(250):
    ex = _render(i, size=32, label_noise=sigma, occluders=False)
    v = ex["joints_valid"]
    diffs.append((ex["joints"] - ex["joints_clean"])[v])
  d = np.concatenate(diffs)
  assert len(d) > 2000
  assert abs(d.mean()) < 0.1
  np.testing.assert_allclose(d.std(0), sigma, rtol=0.06)


def test_label_noise_changes_only_the_noisy_joints():
  a, b = _render(5, label_noise=0.0), _render(5, label_noise=2.0)
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["joints_clean"], b["joints_clean"])
  np.testing.assert_array_equal(a["joints"], a["joints_clean"])
  assert not np.array_equal(b["joints"], b["joints_clean"])


def test_bad_arguments():
  rng = synthetic.example_rng(0, "train", 0)
  with pytest.raises(ValueError, match="16x16"):
    synthetic.render_example(rng, 8, 64)
  with pytest.raises(ValueError, match="person_height"):
    synthetic.render_example(rng, 64, 64, person_height=(0.9, 0.5))
  with pytest.raises(ValueError, match="split"):
    synthetic.example_rng(0, "validation", 0)


def test_encoders_roundtrip():
  img = _render(1, size=40)["image"]
  np.testing.assert_array_equal(synthetic.decode_image(synthetic.encode_png(img)), img)
  jpeg = synthetic.decode_image(synthetic.encode_jpeg(img))
  assert jpeg.shape == img.shape and np.abs(jpeg.astype(int) - img).mean() < 8


def test_contact_sheet_and_render_rate(tmp_path):
  from studies import render_synthetic

  path = tmp_path / "sheet.png"
  lines = render_synthetic.run(preview=str(path), benchmark=True, n=2, size=32)
  assert lines[0] == f"wrote {path}" and len(lines) == 3
  assert all("examples/CPU-s" in line for line in lines[1:])
  with Image.open(path) as im:
    # 2 examples, each raw + labelled, 32 px zoomed 8x, on contact_sheet's 4 px grid.
    assert im.size == (4 * (256 + 4) + 4, 256 + 2 * 4)
  with pytest.raises(ValueError, match="nothing to do"):
    render_synthetic.run()
