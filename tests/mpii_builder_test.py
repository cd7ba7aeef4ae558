"""MPII builder on fake RELEASE files with MPII's ragged fields and bad rows."""

import json
import logging

import fake_datasets as fake
import numpy as np
import pytest

from data_prep import mpii

BAD = ("nan", "missing_image", "garbage_image")


def _key(p):
  return p["image_index"], p["person_index"]


def _expected_train(info):
  """Persons the builder must emit in train+validation (file order)."""
  return [p for p in info["persons"] if p["kind"] == "ok"]


def _check_person(ex, p, index):
  """Compares one built example with the fake person it came from."""
  assert ex["index"] == index
  assert (ex["image_index"], ex["person_index"]) == _key(p)
  assert ex["image_name"] == p["image_name"].encode()
  assert ex["activity"] == p["activity"].encode()
  joints = np.zeros((16, 2))
  valid = np.zeros(16, bool)
  visible = np.zeros(16, bool)
  for q in p["points"]:
    joints[q["id"]] = q["x"] - 1, q["y"] - 1
    valid[q["id"]] = True
    v = q["is_visible"]
    visible[q["id"]] = np.size(v) == 0 or int(v) != 0  # '' / [] -> visible
  assert ex["joints"].dtype == np.float32 and ex["joints"].shape == (16, 2)
  np.testing.assert_allclose(ex["joints"], joints)
  np.testing.assert_array_equal(ex["joints_valid"], valid)
  np.testing.assert_array_equal(ex["joints_visible"], visible)
  head = np.asarray(p["head"]) - 1
  np.testing.assert_allclose(ex["head_box"], head)
  np.testing.assert_allclose(ex["head_size"], 0.6 * np.hypot(*(head[2:] - head[:2])), rtol=1e-6)
  center = np.asarray(p["objpos"]) - 1
  np.testing.assert_allclose(ex["center"], center)
  np.testing.assert_allclose(ex["scale"], p["scale"], rtol=1e-6)
  half = np.array([0.2, 0.3]) * 200 * p["scale"] / 2
  np.testing.assert_allclose(ex["torso_box"], [*(center - half), *(center + half)], rtol=1e-5)
  rsho, lhip = 12, 3
  torso = np.hypot(*(joints[rsho] - joints[lhip])) if valid[rsho] and valid[lhip] else 0
  np.testing.assert_allclose(ex["torso_size"], torso, rtol=1e-5)


@pytest.mark.parametrize("split_file", ["h5", "json"])
def test_validation_split_from_split_file(tmp_path, caplog, split_file):
  caplog.set_level(logging.INFO)
  info = fake.write_fake_mpii(tmp_path / "manual", split_file=split_file)
  builder = fake.build(mpii.Mpii, tmp_path / "data", tmp_path / "manual")
  val_keys = set(info["validation"])
  people = _expected_train(info)
  for split, want in (
    ("train", [p for p in people if _key(p) not in val_keys]),
    ("validation", [p for p in people if _key(p) in val_keys]),
  ):
    got = fake.read_split(builder, split)
    assert [(e["image_index"], e["person_index"]) for e in got] == [_key(p) for p in want]
    for i, (ex, p) in enumerate(zip(got, want, strict=True)):
      _check_person(ex, p, i)
  assert len(fake.read_split(builder, "validation")) == 2
  assert "no split file" not in caplog.text
  # Bad rows are skipped, each named, then counted.
  for reason, where in (
    ("NaN or infinite joint coordinates", "annolist(3).annorect(3)"),
    ("image file absent", "annolist(4).annorect(1)"),
    ("unreadable image", "annolist(5).annorect(1)"),
  ):
    assert any(reason in r.message and where in r.message for r in caplog.records), reason
  assert "mpii/train: skipped 3 rows" in caplog.text


def test_ragged_cases_parse(tmp_path):
  info = fake.write_fake_mpii(tmp_path / "manual")
  names, train, test = mpii.read_annotations(tmp_path / "manual" / mpii.ANNOTATIONS)
  assert names == info["names"]
  keys = [_key(p) for p in train]
  # No example for the rectangle without annopoints, the image without annorect,
  # nor the annorect lacking the annopoints field.
  assert (2, 0) not in keys and not any(i in (7, 8) for i, _ in keys)
  by_key = {_key(p): p for p in train}
  p00 = by_key[(0, 0)]
  # is_visible '1' -> visible, '0' -> occluded, [] -> visible.
  np.testing.assert_array_equal(p00["joints_visible"][:3], [True, False, True])
  assert by_key[(2, 1)]["joints_valid"].sum() == 1  # the collapsed single point
  assert by_key[(1, 0)]["joints_valid"].all()  # the collapsed single annorect
  assert by_key[(2, 2)]["problem"] == "NaN or infinite joint coordinates"
  assert [_key(p) for p in test] == [(5, 0), (6, 0)]  # (5, 1) has objpos []


def test_bad_scales_and_head_boxes_are_row_problems(tmp_path):
  kinds = ("zero_scale", "negative_scale", "flipped_head", "test_negative_scale", "far_joints")
  info = fake.write_fake_mpii(tmp_path / "manual", extra_bad=kinds)
  _, train, test = mpii.read_annotations(tmp_path / "manual" / mpii.ANNOTATIONS)
  parsed = {_key(p): p for p in train + test}
  problems = {p["kind"]: parsed[_key(p)]["problem"] for p in info["persons"] if p["kind"] in kinds}
  assert problems == {
    "zero_scale": "scale not positive and finite",
    "negative_scale": "scale not positive and finite",
    "flipped_head": "degenerate head box (x2 <= x1 or y2 <= y1)",
    "test_negative_scale": "scale not positive and finite",
    "far_joints": None,  # checked against the image's size when it is read
  }
  flipped = next(p for p in info["persons"] if p["kind"] == "flipped_head")
  assert parsed[_key(flipped)]["detail"] == "head box [25, 30, 5, 6] (1-based)"
  # The good persons pass every check.
  good = [_key(p) for p in info["persons"] if p["kind"] in ("ok", "test")]
  assert good and not any(parsed[k]["problem"] for k in good)


def test_test_split_has_no_joints(tmp_path):
  info = fake.write_fake_mpii(tmp_path / "manual", split_file="h5")
  builder = fake.build(mpii.Mpii, tmp_path / "data", tmp_path / "manual")
  got = fake.read_split(builder, "test")
  want = [p for p in info["persons"] if p["kind"] == "test"]
  assert len(got) == len(want) == 2
  for ex, p in zip(got, want, strict=True):
    assert (ex["image_index"], ex["person_index"]) == _key(p)
    assert not ex["joints_valid"].any() and not ex["joints"].any()
    np.testing.assert_allclose(ex["center"], np.asarray(p["objpos"]) - 1)
    assert ex["head_size"] == 0 and ex["torso_size"] == 0
    np.testing.assert_array_equal(ex["image_hw"], info["hw"])


def test_fallback_split_warns_and_is_deterministic(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  info = fake.write_fake_mpii(tmp_path / "manual", split_file=None)
  builder = fake.build(mpii.Mpii, tmp_path / "data", tmp_path / "manual")
  assert "no split file" in caplog.text and "valid.h5" in caplog.text
  people = _expected_train(info)
  val = [_key(p) for p in people if mpii.fallback_is_validation(p["image_name"])]
  train = [_key(p) for p in people if not mpii.fallback_is_validation(p["image_name"])]
  got_val = [(e["image_index"], e["person_index"]) for e in fake.read_split(builder, "validation")]
  got_train = [(e["image_index"], e["person_index"]) for e in fake.read_split(builder, "train")]
  assert got_val == val and got_train == train and val  # whole images held out


def test_h5_with_one_based_index_is_rejected(tmp_path):
  fake.write_fake_mpii(tmp_path / "manual", split_file="h5", h5_one_based=True)
  with pytest.raises(ValueError, match=r"valid\.h5: row 0: .*0-based"):
    fake.build(mpii.Mpii, tmp_path / "data", tmp_path / "manual")


def test_missing_manual_dir_and_annotation_file(tmp_path):
  fake.check_missing_sources(mpii.Mpii, tmp_path, "mpii_human_pose_v1_u12_1.mat")


def test_as_list_and_number_helpers():
  assert mpii._as_list(np.zeros((0, 0))) == []
  assert mpii._as_list(None) == []
  assert mpii._as_list(3) == [3]
  assert mpii._number("1") == 1.0 and mpii._number(" 0 ") == 0.0
  assert mpii._number(np.array([], dtype="<U1")) is None and mpii._number("") is None
  # valid.h5 image names: fixed-length bytes (pose-hg-train) or char codes.
  codes = np.zeros((1, 16))
  codes[0, :5] = [ord(c) for c in "a.jpg"]
  assert mpii._h5_names(codes) == ["a.jpg"]
  assert mpii._h5_names(np.array([b"005808361.jpg"])) == ["005808361.jpg"]


def test_json_entries_without_a_person_warn(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  fake.write_fake_mpii(tmp_path / "manual", split_file="json", validation=((0, 0),))
  names, train, _ = mpii.read_annotations(tmp_path / "manual" / mpii.ANNOTATIONS)
  path = tmp_path / "manual" / "valid.json"
  entries = json.loads(path.read_text())
  entries.append({"image": names[0], "center": [500.0, 500.0], "scale": 1.0})
  path.write_text(json.dumps(entries))
  assert mpii.validation_keys(path, names, train) == {(0, 0)}
  assert "1 of the valid.json persons match no annotated training person" in caplog.text
