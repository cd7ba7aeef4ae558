"""PCK / PCKh against hand-computed cases: masks, boundaries, table averaging."""

import jax.numpy as jnp
import numpy as np
import pytest

from heatpose_jax import joints, metrics

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


def test_pckh_curve_thresholds_are_official_range():
  assert metrics.PCKH_THRESHOLDS.shape == (51,)
  assert metrics.PCKH_THRESHOLDS[0] == 0 and metrics.PCKH_THRESHOLDS[-1] == 0.5
  assert metrics.PCKH_THRESHOLDS[10] == 0.1


def test_head_size_from_boxes():
  np.testing.assert_allclose(
    metrics.head_size_from_boxes([[5, 5, 20, 25], [0, 0, 0, 0]]), [15.0, 0.0]
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


def _flic_person(facing_camera: bool) -> np.ndarray:
  """(11, 2) annotated joints; torso ‖r_sho − l_hip‖ = 100, ‖l_sho − r_hip‖ = 50."""
  p = np.zeros((11, 2))
  a = FLIC.annotated.index
  p[a("r_shoulder")] = (100, 100)
  p[a("l_hip")] = (160, 180)
  p[a("l_shoulder")] = (200, 100) if facing_camera else (50, 100)
  p[a("r_hip")] = (80, 140) if not facing_camera else (120, 180)
  return p


def test_flic_torso_normalizer_person_and_observer_centric():
  gt = np.stack([_flic_person(True), _flic_person(False)])
  np.testing.assert_allclose(metrics.flic_torso_normalizer(gt), [100.0, 100.0])
  np.testing.assert_array_equal(metrics.faces_away(gt, np.ones((2, 11), bool), FLIC), [0, 1])
  np.testing.assert_allclose(metrics.flic_torso_normalizer(gt, observer_centric=True), [100, 50])
  # A missing shoulder: no swap decision, and no torso where r_shoulder is missing.
  valid = np.ones((2, 11), bool)
  valid[1, FLIC.annotated.index("r_shoulder")] = False
  np.testing.assert_allclose(metrics.flic_torso_normalizer(gt, valid, True), [100.0, 0.0])


def test_to_observer_centric_swaps_left_and_right():
  gt = _flic_person(False)[None]
  valid = np.ones((1, 11), bool)
  valid[0, FLIC.annotated.index("l_wrist")] = False
  oc, oc_valid = metrics.to_observer_centric(gt, valid, [True], FLIC)
  a = FLIC.annotated.index
  np.testing.assert_array_equal(oc[0, a("r_shoulder")], gt[0, a("l_shoulder")])
  np.testing.assert_array_equal(oc[0, a("nose")], gt[0, a("nose")])
  assert not oc_valid[0, a("r_wrist")] and oc_valid[0, a("l_wrist")]


def test_flic_tables_observer_centric_changes_only_the_torso():
  gt = np.stack([_flic_person(True)] * 3 + [_flic_person(False)])
  valid = np.ones((4, 11), bool)
  pred = gt + (3.0, 4.0)  # distance 5 = 0.05 · 100, but 0.1 · 50
  pc = metrics.flic_pck_tables(pred, gt, valid)
  oc = metrics.flic_pck_tables(pred, gt, valid, observer_centric=True)
  assert list(pc) == [0.05, 0.2]
  assert pc[0.05] == {"Head": 100.0, "Shoulder": 100.0, "Elbow": 100.0, "Wrist": 100.0}
  assert oc[0.05] == {"Head": 75.0, "Shoulder": 75.0, "Elbow": 75.0, "Wrist": 75.0}
  assert oc[0.2]["Wrist"] == 100.0
  # Predictions already observer-centric: compared with the swapped ground truth.
  oc_pred, _ = metrics.to_observer_centric(gt, valid, metrics.faces_away(gt, valid, FLIC), FLIC)
  t = metrics.flic_pck_tables(
    oc_pred, gt, valid, [0.01], observer_centric=True, predictions_observer_centric=True
  )
  assert t[0.01] == {"Head": 100.0, "Shoulder": 100.0, "Elbow": 100.0, "Wrist": 100.0}


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


def test_format_table():
  text = metrics.format_table({"PCKh@0.5": {"Head": 96.14, "Total": 82.0}})
  assert text.splitlines() == ["          Head Total", "PCKh@0.5  96.1  82.0"]
