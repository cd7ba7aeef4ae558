"""PCK / PCKh against hand-computed cases: masks, boundaries, table averaging."""

import jax.numpy as jnp
import numpy as np
import pytest

from heatpose_jax.data import flic_labels, joints
from heatpose_jax.evaluation import metrics

MPII = joints.SKELETONS["mpii"]
FLIC = joints.SKELETONS["flic"]


def test_pck_boundary_masks_and_normalizer_exclusion():
  gt = np.zeros((3, 3, 2))
  pred = np.zeros((3, 3, 2))
  pred[:, 0] = (3.0, 4.0)  # distance 5: ratio exactly 0.5 with normalizer 10
  pred[:, 1] = (np.nan, 0.0)  # a NaN prediction is never correct
  valid = np.ones((3, 3), bool)
  valid[1, 2] = False  # not annotated: skipped even though perfect
  normalizer = np.array([10.0, 10.0, 0.0])  # row 2: no normalizer, excluded
  correct, evaluated = metrics.pck(pred, gt, valid, normalizer, [0.49, 0.5])
  assert correct.shape == (2, 3, 3)
  np.testing.assert_array_equal(evaluated, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(correct[0], [[0, 0, 1], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(correct[1], [[1, 0, 1], [1, 0, 0], [0, 0, 0]])

  rates, counts = metrics.pck_curve(pred, gt, valid, normalizer, [0.49, 0.5])
  np.testing.assert_array_equal(counts, [2, 2, 1])
  np.testing.assert_allclose(rates, [[0, 0, 100], [100, 0, 100]])


def test_pck_per_joint_normalizer_and_jax_inputs():
  gt = jnp.zeros((2, 2, 2))
  pred = jnp.full((2, 2, 2), 3.0)  # distance 3·√2 ≈ 4.243
  norm = jnp.array([[10.0, 5.0], [-1.0, 20.0]])  # (N, J); ≤ 0 excluded
  rates, counts = metrics.pck_curve(pred, gt, jnp.ones((2, 2), bool), norm, jnp.array([0.5]))
  np.testing.assert_array_equal(counts, [1, 2])
  np.testing.assert_allclose(rates, [[100.0, 50.0]])


def test_joint_without_examples_is_nan():
  rates, counts = metrics.pck_curve(
    np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), [[1, 0], [1, 0]], np.ones(2), [0.1]
  )
  np.testing.assert_array_equal(counts, [2, 0])
  assert rates[0, 0] == 100.0 and np.isnan(rates[0, 1])


def _mpii_rates_counts():
  rates = np.full(16, 80.0)
  counts = np.full(16, 10)
  rates[MPII.index("r_shoulder")], counts[MPII.index("r_shoulder")] = 50.0, 30
  for name in ("pelvis", "thorax"):  # excluded from every column
    rates[MPII.index(name)], counts[MPII.index(name)] = 0.0, 1000
  return rates, counts


def test_table_left_right_mean_and_count_weighted_pools():
  rates, counts = _mpii_rates_counts()
  t = metrics.table(rates, counts, MPII)
  assert list(t) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "UBody", "Total"]
  assert t["Head"] == pytest.approx(80.0)
  assert t["Shoulder"] == pytest.approx(65.0)  # (80 + 50) / 2, not count-weighted (57.5)
  assert t["Elbow"] == pytest.approx(80.0)
  # UBody pools shoulders, elbows, wrists: (5·8 + 15) / (5·10 + 30).
  assert t["UBody"] == pytest.approx(100 * 55 / 80)
  # Total pools the 14 scored joints: (13·8 + 15) / (13·10 + 30); pelvis, thorax out.
  assert t["Total"] == pytest.approx(100 * 119 / 160)
  assert all(isinstance(v, float) for v in t.values())


def test_table_skips_joints_without_examples_and_takes_curves():
  rates, counts = _mpii_rates_counts()
  lw, rw = MPII.index("l_wrist"), MPII.index("r_wrist")
  rates[lw], counts[lw] = np.nan, 0
  rates[rw] = 30.0
  t = metrics.table(rates, counts, MPII)
  assert t["Wrist"] == pytest.approx(30.0)
  assert t["UBody"] == pytest.approx(100 * (3 * 8 + 15 + 3) / 70)  # l_wrist: 0 of 0
  curves = metrics.table(np.stack([rates, rates / 2]), counts, MPII, pooled=False)
  assert set(curves) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
  np.testing.assert_allclose(curves["Shoulder"], [65.0, 32.5])


def test_mpii_pckh_missing_skipped_occluded_counted():
  n = 4
  gt = np.tile(np.arange(32, dtype=float).reshape(16, 2) * 7, (n, 1, 1))
  head = np.full(n, 15.0)
  pred = gt.copy()
  pred[:2] += (4.5, 6.0)  # distance 7.5 = 0.5 · 15: correct (≤)
  pred[2:] += (30.0, 40.0)  # distance 50: wrong
  valid = np.ones((n, 16), bool)
  valid[3, MPII.index("l_ankle")] = False  # missing (and wrong): skipped
  # Occluded joints are simply valid: visibility is no input of the metric.
  t = metrics.mpii_pckh_table(pred, gt, valid, head)
  assert t["Head"] == pytest.approx(50.0)
  assert t["Shoulder"] == pytest.approx(50.0)
  assert t["Ankle"] == pytest.approx((50.0 + 100 * 2 / 3) / 2)
  assert t["UBody"] == pytest.approx(50.0)
  assert t["Total"] == pytest.approx(100 * 28 / 55)
  assert metrics.mpii_pckh_table(pred, gt, valid, head, 0.49)["Total"] == 0.0


def test_head_size_from_boxes():
  np.testing.assert_allclose(
    joints.head_size_from_boxes([[5, 5, 20, 25], [0, 0, 0, 0]]), [15.0, 0.0]
  )


def test_synthetic_tables_with_head_and_torso_normalizers():
  skel = joints.SKELETONS["synthetic"]
  gt = np.zeros((2, 14, 2))
  pred = gt + (0.0, 6.0)
  valid = np.ones((2, 14), bool)
  head = metrics.pck_tables(pred, gt, valid, np.array([10.0, 20.0]), skel, [0.5])
  torso = metrics.pck_tables(pred, gt, valid, np.array([50.0, 50.0]), skel, [0.1, 0.2])
  assert head[0.5]["Total"] == pytest.approx(50.0)
  assert torso[0.1]["Knee"] == 0.0 and torso[0.2]["Knee"] == 100.0


def _flic_people() -> np.ndarray:
  """(3, 11, 2) annotated joints: facing the camera, backward, shoulders crossed.

  Torsos: hourglass ‖r_sho − l_hip‖ = 100 for all three; modec ‖l_sho − r_hip‖ of
  the flipped labels = 130, 80, 40; observer-centric = 100, 128.06…, 40.
  """
  a = FLIC.annotated.index
  people = np.zeros((3, 11, 2))
  named = [
    # Facing the camera: the person's left is on the image's right.
    dict(
      l_shoulder=(220, 100), l_elbow=(240, 160), l_wrist=(250, 220),
      r_shoulder=(100, 100), r_elbow=(80, 160), r_wrist=(70, 220),
      l_hip=(160, 180), r_hip=(170, 220), l_eye=(150, 60), r_eye=(170, 60), nose=(160, 70),
    ),
    # Backward: all three left arm joints left of the right ones.
    dict(
      l_shoulder=(100, 100), l_elbow=(90, 160), l_wrist=(80, 220),
      r_shoulder=(200, 100), r_elbow=(210, 160), r_wrist=(220, 220),
      l_hip=(140, 180), r_hip=(200, 180), l_eye=(140, 60), r_eye=(160, 60), nose=(150, 70),
    ),
    # Shoulders crossed, elbows not: observer-centric swaps it, MODEC does not.
    dict(
      l_shoulder=(150, 150), l_elbow=(260, 200), l_wrist=(270, 250),
      r_shoulder=(170, 100), r_elbow=(120, 200), r_wrist=(110, 250),
      l_hip=(230, 180), r_hip=(174, 182), l_eye=(150, 60), r_eye=(170, 60), nose=(160, 70),
    ),
  ]  # fmt: skip
  for i, person in enumerate(named):
    for name, xy in person.items():
      people[i, a(name)] = xy
  return people


def test_flip_backwards_facing_swaps_arms_of_backward_rows_only():
  gt = _flic_people()
  valid = np.ones((3, 11), bool)
  flipped, rows = flic_labels.flip_backwards_facing(gt, valid, FLIC)
  np.testing.assert_array_equal(rows, [False, True, False])
  a = FLIC.annotated.index
  arms = ("shoulder", "elbow", "wrist")
  for part in arms:
    np.testing.assert_array_equal(flipped[1, a(f"l_{part}")], gt[1, a(f"r_{part}")])
    np.testing.assert_array_equal(flipped[1, a(f"r_{part}")], gt[1, a(f"l_{part}")])
  untouched = [a(n) for n in ("l_hip", "r_hip", "l_eye", "r_eye", "nose")]
  np.testing.assert_array_equal(flipped[1, untouched], gt[1, untouched])
  np.testing.assert_array_equal(flipped[[0, 2]], gt[[0, 2]])
  # Idempotent: a flipped row has its left arm on the right.
  again, rows2 = flic_labels.flip_backwards_facing(flipped, valid, FLIC)
  np.testing.assert_array_equal(again, flipped)
  assert not rows2.any()
  # One example (N = 1), and a row with a missing arm joint is never flipped.
  one, one_rows = flic_labels.flip_backwards_facing(gt[1:2], valid[1:2], FLIC)
  np.testing.assert_array_equal(one, flipped[1:2])
  assert one_rows.tolist() == [True]
  valid[1, a("r_wrist")] = False
  assert not flic_labels.flip_backwards_facing(gt, valid, FLIC)[1][1]


def test_flip_backwards_facing_runs_under_jit():
  import jax

  gt = _flic_people()
  valid = np.ones((3, 11), bool)
  out, rows = jax.jit(lambda j, v: flic_labels.flip_backwards_facing(j, v, FLIC))(
    jnp.asarray(gt, jnp.float32), jnp.asarray(valid)
  )
  ref, ref_rows = flic_labels.flip_backwards_facing(gt, valid, FLIC)
  np.testing.assert_allclose(np.asarray(out), ref)
  np.testing.assert_array_equal(np.asarray(rows), ref_rows)


def test_flic_protocol_labels_and_torsos():
  gt = _flic_people()
  valid = np.ones((3, 11), bool)
  np.testing.assert_allclose(flic_labels.torso_normalizer(gt), [130, 80, 40])  # modec default
  np.testing.assert_allclose(flic_labels.torso_normalizer(gt, valid, "hourglass"), [100] * 3)
  np.testing.assert_allclose(
    flic_labels.torso_normalizer(gt, valid, "observer_centric"), [100, np.hypot(100, 80), 40]
  )
  labels = {p: flic_labels.protocol_labels(gt, valid, p) for p in flic_labels.PROTOCOLS}
  assert flic_labels.PROTOCOLS[0] == "modec"
  np.testing.assert_array_equal(labels["modec"].relabelled, [False, True, False])
  np.testing.assert_array_equal(labels["hourglass"].relabelled, [False, False, False])
  np.testing.assert_array_equal(labels["hourglass"].joints, gt)
  np.testing.assert_array_equal(labels["observer_centric"].relabelled, [False, True, True])
  # A missing torso joint gives 0 (the row is not scored); no swap without both shoulders.
  valid[1, FLIC.annotated.index("r_hip")] = False
  valid[2, FLIC.annotated.index("r_shoulder")] = False
  np.testing.assert_allclose(flic_labels.torso_normalizer(gt, valid, "modec"), [130, 0, 40])
  oc = flic_labels.protocol_labels(gt, valid, "observer_centric")
  np.testing.assert_array_equal(oc.relabelled, [False, True, False])
  np.testing.assert_allclose(oc.torso, [100, 0, 0])
  with pytest.raises(ValueError, match="unknown FLIC protocol"):
    flic_labels.protocol_labels(gt, valid, "person_centric")


def test_to_observer_centric_swaps_left_and_right():
  gt = _flic_people()[1:2]
  valid = np.ones((1, 11), bool)
  valid[0, FLIC.annotated.index("l_wrist")] = False
  oc, oc_valid = flic_labels.to_observer_centric(gt, valid, [True], FLIC)
  a = FLIC.annotated.index
  np.testing.assert_array_equal(oc[0, a("r_shoulder")], gt[0, a("l_shoulder")])
  np.testing.assert_array_equal(oc[0, a("r_hip")], gt[0, a("l_hip")])
  np.testing.assert_array_equal(oc[0, a("nose")], gt[0, a("nose")])
  assert not oc_valid[0, a("r_wrist")] and oc_valid[0, a("l_wrist")]


def test_flic_pck_tables_by_protocol():
  gt = _flic_people()
  valid = np.ones((3, 11), bool)
  pred = gt + (6.0, 8.0)  # 10 px from examples.mat's labels
  tables = {p: metrics.flic_pck_tables(pred, gt, valid, [0.2], p) for p in flic_labels.PROTOCOLS}
  assert tables["hourglass"][0.2] == dict.fromkeys(["Head", "Shoulder", "Elbow", "Wrist"], 100.0)
  # modec: row 1's arms meet the flipped labels (≈ 100 px off, torso 80); row 2's
  # torso is 40 (10 / 40 > 0.2); the nose of row 1 is 10 / 80 ≤ 0.2.
  expected = {"Head": 200 / 3, "Shoulder": 100 / 3, "Elbow": 100 / 3, "Wrist": 100 / 3}
  assert tables["modec"][0.2] == pytest.approx(expected)
  # observer-centric: predictions are relabelled too; only row 2's torso (40) fails.
  assert tables["observer_centric"][0.2] == pytest.approx(dict.fromkeys(expected, 200 / 3))
  # Predictions that already carry a protocol's labels are perfect under it.
  modec = flic_labels.protocol_labels(gt, valid, "modec").joints
  assert set(metrics.flic_pck_tables(modec, gt, valid, [0.01])[0.01].values()) == {100.0}
  oc = flic_labels.protocol_labels(gt, valid, "observer_centric").joints
  t = metrics.flic_pck_tables(
    oc, gt, valid, [0.01], "observer_centric", predictions_observer_centric=True
  )
  assert set(t[0.01].values()) == {100.0}


def test_x_error_sigma_removes_outliers():
  errors = np.array([1.0, -1.0, 3.0, -3.0, 25.0, -30.0, 1000.0])
  gt = np.zeros((7, 1, 2))
  pred = gt.copy()
  pred[:, 0, 0] = errors
  pred[:, 0, 1] = 99.0  # y errors are ignored
  valid = np.ones((7, 1), bool)
  valid[6] = False
  sigma, removed = metrics.x_error_sigma(pred, gt, valid)
  assert sigma == pytest.approx(np.sqrt(5.0)) and removed == 2
  pred[4, 0, 0] = 20.0  # |e| = 20 is kept
  sigma, removed = metrics.x_error_sigma(pred, gt, valid, outlier_px=20)
  assert removed == 1 and sigma == pytest.approx(np.std([1, -1, 3, -3, 20]))
  pred[0, 0, 0] = np.nan  # a NaN prediction counts as removed
  stats = metrics.x_error_stats(pred, gt, valid, outlier_px=20)
  assert stats.removed == 2 and stats.kept == 4
  assert stats.sigma == pytest.approx(np.std([-1, 3, -3, 20]))
  # Robust σ of the kept [-1, 3, -3, 20]: median 1, |e − 1| = 2, 2, 4, 19, MAD 3.
  assert stats.robust_sigma == pytest.approx(1.4826 * 3.0)


def test_x_error_stats_robust_sigma_ignores_stray_errors_inside_the_window():
  rng = np.random.default_rng(0)
  n, true_sigma = 20000, 3.0
  err = rng.normal(0.0, true_sigma, (n, 2))
  stray = rng.random((n, 2)) < 0.05  # 5 %: uniform over the whole ±20 window
  err[stray] = rng.uniform(-20, 20, stray.sum())
  far = rng.random((n, 2)) < 0.05  # 5 %: beyond the window, removed
  err[far] = rng.choice([-1, 1], far.sum()) * rng.uniform(25, 200, far.sum())
  gt = rng.uniform(0, 300, (n, 2, 2))
  pred = gt.copy()
  pred[..., 0] += err
  valid = np.ones((n, 2), bool)
  valid[:100, 1] = False
  per = metrics.x_error_stats(pred, gt, valid, per_joint=True)
  assert per.sigma.shape == per.robust_sigma.shape == per.removed.shape == (2,)
  # The strays inflate the plain σ by ≈ 30 %, the robust σ by ≈ 5 %.
  assert (per.sigma > 1.2 * true_sigma).all()
  np.testing.assert_allclose(per.robust_sigma, true_sigma, rtol=0.08)
  assert (np.abs(per.robust_sigma - true_sigma) < 0.25 * (per.sigma - true_sigma)).all()
  # Without strays (far outliers only) both estimate σ.
  clean = np.where(stray, rng.normal(0.0, true_sigma, (n, 2)), err)
  pred[..., 0] = gt[..., 0] + clean
  both = metrics.x_error_stats(pred, gt, valid)
  assert both.sigma == pytest.approx(true_sigma, rel=0.03)
  assert both.robust_sigma == pytest.approx(true_sigma, rel=0.03)
  pred[..., 0] = gt[..., 0] + err
  np.testing.assert_array_equal(per.removed, (far & valid).sum(0))
  np.testing.assert_array_equal(per.kept + per.removed, valid.sum(0))
  # per_joint = the pooled statistics of each joint's slice; pooled = all at once.
  for j in range(2):
    one = metrics.x_error_stats(pred[:, [j]], gt[:, [j]], valid[:, [j]])
    assert one.sigma == pytest.approx(per.sigma[j])
    assert one.robust_sigma == pytest.approx(per.robust_sigma[j])
    assert one.removed == per.removed[j]
  pooled = metrics.x_error_stats(pred, gt, valid)
  assert isinstance(pooled.sigma, float) and isinstance(pooled.removed, int)
  assert pooled.removed == per.removed.sum()
  # Nothing kept: NaN, not a warning.
  none = metrics.x_error_stats(pred, gt, np.zeros_like(valid), per_joint=True)
  assert np.isnan(none.sigma).all() and np.isnan(none.robust_sigma).all()


def test_format_table():
  text = metrics.format_rows({"PCKh@0.5": {"Head": 96.14, "Total": 82.0}})
  assert text.splitlines() == ["          Head Total", "PCKh@0.5  96.1  82.0"]
