"""COCO-format keypoints (issue 21): the builder, the flip pairs from joint names, OKS
AP by pycocotools (of results files, and of training's evaluation: `evaluators/oks.py`),
top-down prediction on boxes and its OKS-NMS, a run's own dataset spec, and MPII's JSON
layout.

The fakes (`fake_coco`) are COCO's layout with a few stick-figure images, 2-3
people per image, a crowd region and a person without labelled keypoints.
"""

import json
import logging
import shutil
from pathlib import Path

import fake_coco
import fake_datasets as fake
import numpy as np
import pytest
import scipy.io as sio

from conftest import one_device_mesh, one_line_error, run_cli
from data_prep import build, mpii
from heatpose_jax import from_config
from heatpose_jax.data import coco_format, dataset_specs, datasets
from heatpose_jax.evaluation import coco_eval, oks_nms

# --- joint names ---------------------------------------------------------------------


@pytest.mark.parametrize(
  "left, right",
  [
    ("left_shoulder", "right_shoulder"),
    ("Left Shoulder", "Right Shoulder"),
    ("Left-shoulder", "Right-shoulder"),
    ("LeftShoulder", "RightShoulder"),
    ("LShoulder", "RShoulder"),
    ("l_shoulder", "r_shoulder"),
    ("L.Shoulder", "R.Shoulder"),
    ("shoulder_left", "shoulder_right"),
    ("shoulder_l", "shoulder_r"),
    ("lshoulder", "rshoulder"),  # glued: pairs because both exist
    ("lsho", "rsho"),  # MPII's short names
  ],
)
def test_flip_pairs_from_each_naming_convention(left, right):
  names = ["nose", right, left, "neck"]
  assert coco_format.derive_flip_pairs(names, "f") == ((left, right),)
  assert coco_format.joint_parts([left, right])[0][1] == "shoulder"


def test_a_name_without_partner_is_one_line_and_the_override_wins():
  names = ["nose", "left_thumb", "left_wrist", "right_wrist"]
  with pytest.raises(
    ValueError, match=r"^f\.json: k: 'left_thumb' has no right partner; .*--flip_pairs"
  ):
    coco_format.derive_flip_pairs(names, "f.json: k")
  pairs = coco_format.parse_flip_pairs("left_wrist:right_wrist", names, "--flip_pairs")
  assert pairs == (("left_wrist", "right_wrist"),)
  assert coco_format.parse_flip_pairs("none", names, "x") == ()
  with pytest.raises(ValueError, match="'thumb' is not a joint"):
    coco_format.parse_flip_pairs("thumb:nose", names, "--flip_pairs")
  # A glued name without its partner is no side: `rank` alone is a word.
  assert coco_format.derive_flip_pairs(["rank", "nose"], "f") == ()


def test_sigmas_by_names_and_the_official_lists():
  coco, src = coco_format.oks_sigmas(coco_format.COCO_KEYPOINTS)
  assert src == "coco"
  # pycocotools' own defaults.
  from pycocotools.cocoeval import Params

  np.testing.assert_allclose(coco, Params(iouType="keypoints").kpt_oks_sigmas)
  crowd, src = coco_format.oks_sigmas(coco_format.CROWDPOSE_KEYPOINTS)
  assert src == "crowdpose"
  np.testing.assert_allclose(
    crowd,
    np.array([0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79])
    / 10,
  )
  # Other spellings of COCO's parts take COCO's list; unknown parts need --sigmas.
  spelled = [n.replace("left_", "L").replace("right_", "R") for n in coco_format.COCO_KEYPOINTS]
  assert coco_format.oks_sigmas(spelled)[1] == "coco"
  with pytest.raises(ValueError, match="no OKS sigma known for 'tail'"):
    coco_format.oks_sigmas(["nose", "tail"])
  assert coco_format.oks_sigmas(["nose", "tail"], "0.1,0.2")[1] == "given"


# --- the builder -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_build(tmp_path_factory):
  """A `coco` build through the CLI: train (4 images) and validation (2 images)."""
  root = tmp_path_factory.mktemp("coco")
  train = fake_coco.write(root / "src", name="train.json", num_images=4)
  val = fake_coco.write(root / "src", name="val.json", num_images=2, seed=5, first_image_id=5000)
  data_dir = root / "data"
  r = run_cli(
    "data_prep.build",
    "--dataset=coco_keypoints",
    "--config=coco",
    f"--annotations=train={train['path']}",
    f"--annotations=validation={val['path']}",
    f"--images={root / 'src' / 'images'}",
    f"--data_dir={data_dir}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  return {"train": train, "val": val, "data_dir": data_dir, "stdout": r.stdout, "stderr": r.stderr}


def _people(data):
  return [a for a in data["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0]


def test_build_keeps_every_annotated_person_with_its_ids_and_visibility(coco_build):
  b = coco_build
  train = _people(b["train"]["data"])
  assert len(train) == 10 and len(_people(b["val"]["data"])) == 5
  assert "  train: 10 examples" in b["stdout"] and "  validation: 5 examples" in b["stdout"]
  # The crowd region and the person without labels: left out and counted, not items.
  assert "left out by design: 1 crowd regions (iscrowd), 1 people with fewer" in b["stderr"]
  source = datasets.data_source(
    "coco_keypoints", "train", config_name="coco", data_dir=str(b["data_dir"])
  )
  for i, ann in enumerate(train):
    ex = source[i]
    kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    assert (int(ex["image_id"]), int(ex["annotation_id"])) == (ann["image_id"], ann["id"])
    np.testing.assert_array_equal(ex["keypoint_visibility"], kp[:, 2])
    np.testing.assert_array_equal(ex["joints_valid"], kp[:, 2] > 0)
    np.testing.assert_array_equal(ex["joints_visible"], kp[:, 2] == 2)
    np.testing.assert_allclose(ex["joints"], np.where(kp[:, 2:] > 0, kp[:, :2], 0))  # no shift
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(ex["bbox"], [x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5], rtol=1e-6)
    np.testing.assert_allclose(ex["center"], [x + w / 2 - 0.5, y + h / 2 - 0.5], rtol=1e-6)
    assert ex["scale"] == pytest.approx(max(h, w / 0.75) / 200)
    assert ex["image_name"] == f"{ann['image_id']:012d}.jpg".encode()
  # The spec travels with the build: the file's joints, flip pairs and limbs.
  spec = datasets.built_spec("coco_keypoints", "coco", str(b["data_dir"]))
  assert spec.name == "coco" and spec.skeleton.annotated == coco_format.COCO_KEYPOINTS
  assert ("left_hip", "right_hip") in spec.skeleton.flip_pairs and spec.box_aspect == 0.75
  assert spec.crop_mode == "box" and spec.prediction_format == "coco"


def _write(path: Path, data) -> Path:
  path.write_text(json.dumps(data))
  return path


def test_bad_items_are_skipped_named_and_counted(tmp_path):
  f = fake_coco.write(tmp_path / "src", num_images=3)
  data = f["data"]
  del data["images"][2]["file_name"]  # its 2 people are skipped
  data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
  data["annotations"][1]["category_id"] = 7
  path = _write(f["path"], data)
  r = run_cli(
    "data_prep.build",
    "--dataset=coco_keypoints",
    "--config=generic",
    f"--annotations=train={path}",
    f"--images={f['images']}",
    f"--data_dir={tmp_path / 'data'}",
  )
  assert r.returncode == 3, r.stderr[-3000:]
  for needle in (
    f"{path}: annotations[0]: keypoints not 3·K numbers (keypoints: 48 values, expected 3 × 17 = 51)",
    f"{path}: annotations[1]: unknown category_id (category_id 7)",
    f"image entry without file_name ({path}: images[2].file_name)",
  ):
    assert needle in r.stderr, needle
  last = r.stdout.strip().splitlines()[-1]
  assert last.startswith("skipped 4 rows") and "unknown category_id: 1" in last
  assert "  train: 3 examples" in r.stdout


@pytest.mark.parametrize(
  "change, needles",
  [
    ("not_json", ["not a readable JSON file"]),
    ("no_keypoints", ["categories: expected one with 'keypoints', found none"]),
    ("no_images", ["field 'images' is missing"]),
    ("unpaired", ["'left_thumb' has no right partner"]),
    ("not_coco", ["are not --config=coco's 17 joints", "use --config=generic"]),
  ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, change, needles):
  names = coco_format.COCO_KEYPOINTS
  if change in ("unpaired", "not_coco"):
    names = (*names, "left_thumb")
  f = fake_coco.write(tmp_path / "src", num_images=1, names=names, limbs=())
  data = f["data"]
  if change == "no_keypoints":
    data["categories"][0]["keypoints"] = []
  if change == "no_images":
    del data["images"]
  _write(f["path"], data)
  if change == "not_json":
    f["path"].write_text("{not json")
  config = "generic" if change == "unpaired" else "coco"
  r = run_cli(
    "data_prep.build",
    "--dataset=coco_keypoints",
    f"--config={config}",
    f"--annotations=train={f['path']}",
    f"--images={f['images']}",
    f"--data_dir={tmp_path / 'data'}",
  )
  one_line_error(r, str(f["path"]), *needles)


def test_build_flags_are_checked(tmp_path):
  r = run_cli(
    "data_prep.build", "--dataset=coco_keypoints", "--annotations=train", f"--data_dir={tmp_path}"
  )
  one_line_error(r, "--annotations=train: expected SPLIT=FILE.json")
  r = run_cli(
    "data_prep.build", "--dataset=lsp", "--images=x", f"--data_dir={tmp_path}", "--manual_dir=."
  )
  one_line_error(r, "--images does not apply to --dataset=lsp")


def test_crowdpose_config_its_limbs_and_the_spec_from_the_build(tmp_path):
  # CrowdPose's files carry COCO's 17-joint skeleton: the config uses its own limbs.
  f = fake_coco.write(
    tmp_path / "src", names=coco_format.CROWDPOSE_KEYPOINTS, limbs=coco_format.COCO_SKELETON
  )
  b = build.build(
    "coco_keypoints",
    tmp_path / "data",
    config="crowdpose",
    annotations=[f"train={f['path']}", f"validation={f['path']}"],
    images=str(f["images"]),
  )
  spec = b.spec
  assert spec.skeleton.num_joints == 14 and ("head", "neck") in spec.skeleton.limbs
  assert spec.skeleton.table[0] == ("Head", ("head", "neck"))
  # Training, evaluation and prediction find the 14 joints through the build.
  from heatpose_jax.configs import coco as coco_config

  config = coco_config.get_config("tiny,tfds=crowdpose")
  config.data_dir = str(tmp_path / "data")
  try:
    assert from_config.skeleton(config).num_joints == 14
    from_config.check(config)
    ex = from_config.crop(config)(from_config.dataset_source(config, "train")[0])
    assert ex["image"].shape == (64, 48, 3) and ex["joints"].shape == (14, 2)
  finally:
    dataset_specs.register(dataset_specs.COCO, replace=True)


def test_aic_in_mmposes_coco_style_layout_builds_with_the_generic_config(tmp_path):
  """AI Challenger as mmpose's `aic_*.json` (no area, no iscrowd): 14 joints in the
  file's order, flip pairs from the names (head top and neck centre), one example per
  person with num_keypoints > 0, v kept."""
  f = fake_coco.write_aic(tmp_path / "src", name="aic_train.json")
  r = run_cli(
    "data_prep.build",
    "--dataset=coco_keypoints",
    "--config=generic",
    f"--annotations=train={f['path']}",
    f"--images={f['images']}",
    f"--data_dir={tmp_path / 'data'}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  people = _people(f["data"])
  assert len(people) == 7 and len(f["data"]["annotations"]) == 8
  assert "  train: 7 examples" in r.stdout
  spec = datasets.built_spec("coco_keypoints", "generic", str(tmp_path / "data"))
  names = spec.skeleton.annotated
  # mmpose's `configs/_base_/datasets/aic.py` names, in its id order.
  assert [n.lower().replace(" ", "_") for n in names] == [
    *(f"{s}_{p}" for s in ("right", "left") for p in ("shoulder", "elbow", "wrist")),
    *(f"{s}_{p}" for s in ("right", "left") for p in ("hip", "knee", "ankle")),
    "head_top",
    "neck",
  ]
  pairs = spec.skeleton.flip_pairs
  assert sorted(pairs) == sorted(
    (f"Left {p}", f"Right {p}") for p in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
  )
  assert not {"Head top", "Neck"} & {n for pair in pairs for n in pair}
  source = datasets.data_source(
    "coco_keypoints", "train", config_name="generic", data_dir=str(tmp_path / "data")
  )
  assert len(source) == 7
  for i, ann in enumerate(people):
    ex = source[i]
    kp = np.asarray(ann["keypoints"], np.float64).reshape(14, 3)
    assert (int(ex["image_id"]), int(ex["annotation_id"])) == (ann["image_id"], ann["id"])
    np.testing.assert_array_equal(ex["keypoint_visibility"], kp[:, 2])
    np.testing.assert_allclose(ex["joints"], np.where(kp[:, 2:] > 0, kp[:, :2], 0))


def test_the_gpu_sized_config_traces_at_256x192(tmp_path):
  """The full-size config's cascade, traced only (no compile: a CPU cannot run it)."""
  import jax

  from heatpose_jax.configs import coco as coco_config
  from heatpose_jax.model import inference

  config = coco_config.get_config()
  config.data_dir = str(tmp_path)  # unbuilt: COCO 2017's 17 joints
  from_config.check(config)
  params = from_config.abstract_params(config, one_device_mesh())
  canvases = jax.ShapeDtypeStruct((2, 256, 192, 3), np.uint8)
  out = jax.eval_shape(
    lambda p, x: inference.predict(from_config.model(config), p, x), params, canvases
  )
  assert out["cascade"].shape == (2, 17, 2)
  assert tuple(config.input_hw) == (256, 192) and config.model.pool_factor == 8


# --- OKS AP (pycocotools) --------------------------------------------------------------


def _pycocotools_stats(gt_path, results_path, sigmas=None):
  """pycocotools on the two files, as its own demo runs it (with `sigmas` if given)."""
  import contextlib
  import io

  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(gt_path))
    dt = gt.loadRes(str(results_path))
    e = COCOeval(gt, dt, "keypoints")
    if sigmas is not None:
      e.params.kpt_oks_sigmas = np.asarray(sigmas)
    e.evaluate()
    e.accumulate()
    e.summarize()
  return e.stats


def test_evaluate_predictions_perfect_perturbed_and_pycocotools_own_numbers(tmp_path):
  f = fake_coco.write(tmp_path / "src", num_images=3)
  for noise, want in ((0.0, 1.0), (2.0, None)):
    res = _write(tmp_path / f"res{noise}.json", fake_coco.perfect_results(f["data"], noise=noise))
    out = tmp_path / f"scores{noise}.json"
    r = run_cli(
      "experiments.evaluate_predictions",
      "--dataset=coco",
      f"--predictions={res}",
      f"--ground_truth={f['path']}",
      f"--output_json={out}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in r.stdout
    assert "PCK@0.2 (COCO, torso)" in r.stdout
    scores = json.loads(out.read_text())
    names = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
    np.testing.assert_allclose([scores[k] for k in names], _pycocotools_stats(f["path"], res))
    if want is not None:
      assert scores["AP"] == want and scores["APl"] == -1  # no large person: pycocotools' −1
      assert scores["tables"]["0.05"]["Total"] == 100.0
    else:
      assert 0 < scores["AP"] < 1 and scores["tables"]["0.05"]["Total"] < 100


def test_evaluate_predictions_bad_results_are_one_line(tmp_path):
  f = fake_coco.write(tmp_path / "src", num_images=1)
  good = fake_coco.perfect_results(f["data"])
  cases = {
    "image": ([{**good[0], "image_id": 12345}], "[0].image_id: 12345 is not among"),
    "keypoints": (
      [{**good[0], "keypoints": good[0]["keypoints"][:-3]}],
      "[0].keypoints: 48 values",
    ),
    "category": (
      [{**good[0], "category_id": 2}],
      "[0].category_id: 2 is not the keypoint category 1",
    ),
    "empty": ([], "expected a list of keypoint results, got an empty list"),
  }
  for name, (results, needle) in cases.items():
    res = _write(tmp_path / f"{name}.json", results)
    r = run_cli(
      "experiments.evaluate_predictions",
      "--dataset=coco",
      f"--predictions={res}",
      f"--ground_truth={f['path']}",
    )
    one_line_error(r, str(res), needle)
  r = run_cli(
    "experiments.evaluate_predictions", "--dataset=coco", f"--predictions={res}", f"--ground_truth={f['path']}",
    "--sigmas=1,2",
  )  # fmt: skip
  one_line_error(r, "--sigmas: 2 values for 17 joints")


def test_crowdpose_scoring_uses_its_sigmas_box_area_and_crowd_index(tmp_path):
  f = fake_coco.write(
    tmp_path / "src", names=coco_format.CROWDPOSE_KEYPOINTS, limbs=coco_format.COCO_SKELETON
  )
  data = f["data"]
  for i, im in enumerate(data["images"]):
    im["crowdIndex"] = (0.1, 0.5, 0.9)[i]
  for a in data["annotations"]:
    del a["area"]  # CrowdPose's files have no area
  gt = _write(f["path"], data)
  res = _write(tmp_path / "res.json", fake_coco.perfect_results(data, noise=1.0))
  out = coco_eval.evaluate(gt, res)
  assert out["sigmas_source"] == "crowdpose" and out["area"] == "box053"
  assert set(out["crowd_index"]) == {"AP_easy", "AP_medium", "AP_hard"}
  assert all(0 <= v <= 1 for v in out["crowd_index"].values())
  # pycocotools itself on a copy whose area is CrowdPose's 0.53·w·h, with its sigmas.
  for a in data["annotations"]:
    a["area"] = 0.53 * a["bbox"][2] * a["bbox"][3]
  copy_path = _write(tmp_path / "gt_area.json", data)
  stats = _pycocotools_stats(copy_path, res, coco_format.CROWDPOSE_SIGMAS)
  np.testing.assert_allclose(list(out["stats"].values()), stats)
  # Its OKS is crowdposetools' `computeOks` (sigmas, 0.53·w·h, labelled joints only).
  e = coco_eval.run_cocoeval(
    *[
      coco_eval.ground_truth_for_eval(
        data, {"id": 1, "keypoints": coco_format.CROWDPOSE_KEYPOINTS}, gt, box_area=True
      )[0]
    ],
    coco_eval.read_results(res, data, {"id": 1, "keypoints": coco_format.CROWDPOSE_KEYPOINTS}),
    1,
    np.array(coco_format.CROWDPOSE_SIGMAS),
  )
  image_id = data["images"][0]["id"]
  gts = e._gts[image_id, 1]
  dts = sorted(e._dts[image_id, 1], key=lambda d: -d["score"])
  var = (2 * np.array(coco_format.CROWDPOSE_SIGMAS)) ** 2
  for j, g in enumerate(gts):
    kg = np.asarray(g["keypoints"], float).reshape(-1, 3)
    if not (kg[:, 2] > 0).any():
      continue
    for i, d in enumerate(dts):
      kd = np.asarray(d["keypoints"], float).reshape(-1, 3)
      err = (
        ((kd[:, :2] - kg[:, :2]) ** 2).sum(1)
        / var
        / (0.53 * g["bbox"][2] * g["bbox"][3] + np.spacing(1))
        / 2
      )
      assert e.ious[image_id, 1][i, j] == pytest.approx(np.exp(-err[kg[:, 2] > 0]).mean())


# --- training, top-down prediction, and scoring the results ------------------------------


@pytest.fixture(scope="module")
def coco_run(coco_build, tmp_path_factory):
  """The `:tiny` COCO config trained in-process for a few steps on `coco_build`."""
  from heatpose_jax import train
  from heatpose_jax.configs import coco as coco_config

  config = coco_config.get_config("tiny")
  overrides = {
    "data_dir": str(coco_build["data_dir"]),
    "phases.coarse.steps": 1,
    "phases.fine.steps": 1,
    "phases.joint.steps": 0,
    "batch_size": 4,
    "log_every": 1,
    "checkpoint_every": 2,
    "max_eval_examples": 4,
    "model.norm": "none",  # not about learning (conftest's `tiny_config`)
  }
  config = from_config.with_overrides(config, overrides)
  workdir = tmp_path_factory.mktemp("coco_run")
  train.train_and_evaluate(config, str(workdir), mesh=one_device_mesh())
  return workdir, config


def test_predictor_crops_a_box_as_training_crops_its_person(coco_build, coco_run):
  from heatpose_jax import predictor
  from heatpose_jax.data import topdown

  workdir, config = coco_run
  pred = predictor.Predictor.from_workdir(str(workdir), spatial_model=False)
  assert (pred.box_scale, pred.box_aspect) == (1.25, 0.75)
  source = from_config.dataset_source(config, "validation")
  ex = source[0]
  image = predictor.load_image(coco_build["val"]["images"] / ex["image_name"].decode())
  canvases, c2i = pred.box_canvases(topdown.encode(image), ex["bbox"])
  cropped = from_config.crop(config)(ex)
  np.testing.assert_allclose(c2i, cropped["canvas_to_image"], rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(canvases[0], cropped["image"])
  poses = pred(image, boxes=[ex["bbox"], ex["bbox"] + 3])
  assert len(poses) == 2 and poses[0]["joints"].shape == (17, 2)
  with pytest.raises(ValueError, match="lies outside the image"):
    pred(image, boxes=[(500, 500, 600, 700)])


def test_predict_with_boxes_writes_results_that_evaluate_predictions_reads(
  coco_build, coco_run, tmp_path
):
  workdir, _ = coco_run
  val = coco_build["val"]
  dets = [
    {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
    for a in _people(val["data"])
  ]
  dets.append({**dets[0], "score": 0.2})  # below the threshold
  dets.append({"image_id": 5000, "category_id": 1, "bbox": [1, 2, 3], "score": 0.9})  # bad
  # A detector's duplicate of the first person's box, scoring lower. The same box: the
  # 2-step model's joints jump with a 1 px shift (OKS 0.33 measured), so a shifted box
  # would test the model, not the NMS.
  dets.append({**dets[0], "score": 0.8})
  boxes = _write(tmp_path / "dets.json", dets)
  args = (
    f"--workdir={workdir}",
    f"--images={val['images']}",
    f"--boxes={boxes}",
    "--box_threshold=0.5",
  )
  out = tmp_path / "out"
  r = run_cli("experiments.predict", *args, f"--output_dir={out}")
  assert r.returncode == 3, r.stderr[-3000:]  # the bad entry, listed
  assert "skipped --boxes entry [6]: bbox not 4 numbers" in r.stdout
  results = json.loads((out / "keypoint_results.json").read_text())
  assert len(results) == len(dets) - 2 == 6  # without --oks_nms: a pose per box
  assert set(results[0]) == {"image_id", "category_id", "keypoints", "score"}
  assert len(results[0]["keypoints"]) == 3 * 17
  record = json.loads((out / "predictions.json").read_text())
  assert record["boxes_report"]["not used: below --box_threshold"] == 1
  # Images of the train split share the folder: they have no box and no overlay.
  assert len(record["predictions"]) == 2 and len(record["without_boxes"]) == 4
  assert (out / "000000005000.png").is_file()
  box = coco_format.bbox_to_box(dets[0]["bbox"]).tolist()
  twins = [p for im in record["predictions"] for p in im["poses"] if p["box"] == box]
  assert [p["box_score"] for p in twins] == [0.9, 0.8] and twins[0]["joints"] == twins[1]["joints"]
  for res in results:  # score = box score × mean joint score
    assert res["score"] == pytest.approx(0.9 * np.mean(res["keypoints"][2::3]), abs=1e-3)
  # --oks_nms=0.9 (HRNet's): one pose of the two near-duplicates, the other removed;
  # --rescore=T: the mean of the joint scores above T only. T near the median joint
  # score, ≥ 0.001 from every score (the file rounds them to 3 decimals).
  written = sorted({s for res in results for s in res["keypoints"][2::3]})
  gaps = [(a + b) / 2 for a, b in zip(written, written[1:], strict=False) if b - a >= 0.002]
  t = min(gaps, key=lambda m: abs(m - np.median(written)))
  nms_out = tmp_path / "nms_out"
  r = run_cli(
    "experiments.predict", *args, "--oks_nms=0.9", f"--rescore={t}", f"--output_dir={nms_out}"
  )
  assert r.returncode == 3, r.stderr[-3000:]
  assert "not used: oks_nms 1 boxes" in r.stdout
  nms_results = json.loads((nms_out / "keypoint_results.json").read_text())
  assert len(nms_results) == 5
  for res in nms_results:
    above = [s for s in res["keypoints"][2::3] if s > t]
    assert res["score"] == pytest.approx(0.9 * (np.mean(above) if above else 0.0), abs=1e-3)
  record = json.loads((nms_out / "predictions.json").read_text())
  assert record["oks_nms"] == 0.9
  assert record["boxes_report"]["used"] == 5 and record["boxes_report"]["not used: oks_nms"] == 1
  (removed,) = [r for p in record["predictions"] for r in p["removed"]]
  assert removed == {"box": box, "box_score": 0.8, "reason": "oks_nms", "oks": 1.0}
  (kept,) = [p for im in record["predictions"] for p in im["poses"] if p["box"] == box]
  assert kept["box_score"] == 0.9  # the better score (box score × mean joint score)
  r = run_cli(
    "experiments.evaluate_predictions",
    "--dataset=coco",
    f"--predictions={nms_out / 'keypoint_results.json'}",
    f"--ground_truth={val['path']}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "OKS sigmas: coco; area: annotation; 5 results, 5 people" in r.stdout


# --- OKS-NMS (`evaluation/oks_nms.py`) -----------------------------------------------------


def _pose(rng, k=17, centre=(50.0, 80.0)):
  """(K, 3) a pose in image pixels around `centre`, joint scores in [0.5, 1]."""
  xy = np.asarray(centre) + rng.uniform(-30, 30, (k, 2))
  return np.concatenate([xy, rng.uniform(0.5, 1, (k, 1))], axis=1)


def test_oks_nms_keeps_the_better_of_identical_poses_and_poses_far_apart():
  rng = np.random.default_rng(0)
  sig = oks_nms.joint_sigmas(coco_format.COCO_KEYPOINTS)
  a, b = _pose(rng), _pose(rng, centre=(400.0, 80.0))
  areas = [3000.0] * 3
  keep = oks_nms.oks_nms(np.stack([a, a, b]), [0.5, 0.9, 0.7], areas, sig, 0.9)
  np.testing.assert_array_equal(keep, [1, 2])  # by decreasing score
  assert keep.dtype == np.int64
  np.testing.assert_array_equal(
    oks_nms.oks_nms(np.stack([a, b]), [0.6, 0.7], areas[:2], sig, 0.1), [1, 0]
  )
  assert oks_nms.oks_nms(np.zeros((0, 17, 3)), [], [], sig, 0.9).shape == (0,)
  # Equal scores: file order wins.
  np.testing.assert_array_equal(
    oks_nms.oks_nms(np.stack([a, a]), [0.8, 0.8], areas[:2], sig, 0.9), [0]
  )


def test_oks_nms_drops_above_the_threshold_and_keeps_at_it():
  """HRNet's `inds = np.where(oks_ovr <= thresh)`: a pose at exactly the threshold stays."""
  rng = np.random.default_rng(1)
  sig = oks_nms.joint_sigmas(coco_format.COCO_KEYPOINTS)
  a = _pose(rng)
  b = a + np.concatenate([rng.normal(0, 2, (17, 2)), np.zeros((17, 1))], axis=1)
  kp, areas = np.stack([a, b]), [2500.0, 3500.0]
  oks = oks_nms.pairwise_oks(kp, areas, sig)
  assert oks[0, 1] == oks[1, 0] and 0.5 < oks[0, 1] < 1 and np.allclose(np.diag(oks), 1)
  np.testing.assert_array_equal(oks_nms.oks_nms(kp, [0.9, 0.8], areas, sig, oks[0, 1]), [0, 1])
  np.testing.assert_array_equal(oks_nms.oks_nms(kp, [0.9, 0.8], areas, sig, oks[0, 1] - 1e-9), [0])
  # Identical poses have OKS 1: threshold 1 keeps both.
  np.testing.assert_array_equal(
    oks_nms.oks_nms(np.stack([a, a]), [0.9, 0.8], areas, sig, 1.0), [0, 1]
  )
  # Greedy: c is dropped by a (kept), so c cannot drop b; b is kept although OKS(b, c) is high.
  c = (a + b) / 2
  kp3 = np.stack([a, b, c])
  o = oks_nms.pairwise_oks(kp3, [3000.0] * 3, sig)
  t = (o[0, 2] + max(o[0, 1], 0)) / 2
  assert o[0, 2] > t >= o[0, 1] and o[1, 2] > t
  np.testing.assert_array_equal(oks_nms.oks_nms(kp3, [0.9, 0.5, 0.7], [3000.0] * 3, sig, t), [0, 1])


def test_oks_nms_oks_is_pycocotools_computeoks():
  """With equal areas, OKS of (g, d) is pycocotools' of d to a ground truth g labelled
  at every joint, `area` the same."""
  import contextlib
  import io

  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  rng = np.random.default_rng(2)
  g = _pose(rng)
  g[:, 2] = 2  # v = 2: labelled and visible
  d = g.copy()
  d[:, :2] += rng.normal(0, 4, (17, 2))
  d[:, 2] = rng.uniform(0, 1, 17)
  area = 2345.0
  gt = COCO()
  gt.dataset = {
    "images": [{"id": 7, "width": 200, "height": 200}],
    "annotations": [{
      "id": 1, "image_id": 7, "category_id": 1, "keypoints": g.ravel().tolist(),
      "num_keypoints": 17, "iscrowd": 0, "area": area, "bbox": [20.0, 50.0, 60.0, 60.0],
    }],
    "categories": [{"id": 1, "name": "person", "keypoints": list(coco_format.COCO_KEYPOINTS)}],
  }  # fmt: skip
  with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
    dt = gt.loadRes(
      [{"image_id": 7, "category_id": 1, "keypoints": d.ravel().tolist(), "score": 0.9}]
    )
    e = COCOeval(gt, dt, "keypoints")
    e.evaluate()
  want = e.ious[7, 1][0, 0]
  sig = oks_nms.joint_sigmas(coco_format.COCO_KEYPOINTS)
  np.testing.assert_allclose(sig, e.params.kpt_oks_sigmas)
  got = oks_nms.pairwise_oks(np.stack([g, d]), [area, area], sig)
  assert 0.2 < want < 0.95
  assert got[0, 1] == pytest.approx(want, rel=1e-12) and got[1, 0] == got[0, 1]


def test_oks_nms_keypoint_threshold_counts_joints_above_it_in_both_poses():
  rng = np.random.default_rng(3)
  sig = oks_nms.joint_sigmas(coco_format.COCO_KEYPOINTS)
  a = _pose(rng)
  b = a.copy()
  b[:8, :2] += 60  # far off, and unsure there
  b[:8, 2] = 0.1
  kp, areas = np.stack([a, b]), [3000.0, 3000.0]
  assert oks_nms.pairwise_oks(kp, areas, sig)[0, 1] < 0.6
  assert oks_nms.pairwise_oks(kp, areas, sig, keypoint_threshold=0.3)[0, 1] == 1.0
  np.testing.assert_array_equal(oks_nms.oks_nms(kp, [0.9, 0.8], areas, sig, 0.9), [0, 1])
  np.testing.assert_array_equal(oks_nms.oks_nms(kp, [0.9, 0.8], areas, sig, 0.9, 0.3), [0])
  # A joint counts only where both poses score above it: b's low scores exclude a's joints too.
  swapped = np.stack([b, a])
  assert oks_nms.pairwise_oks(swapped, areas, sig, keypoint_threshold=0.3)[0, 1] == 1.0
  # No joint above it in both: OKS 0, both kept.
  c = a.copy()
  c[:, 2] = 0.1
  assert oks_nms.pairwise_oks(np.stack([a, c]), areas, sig, keypoint_threshold=0.3)[0, 1] == 0
  np.testing.assert_array_equal(
    oks_nms.oks_nms(np.stack([a, c]), [0.9, 0.8], areas, sig, 0.9, 0.3), [0, 1]
  )


def test_oks_nms_sigmas_by_joint_names_and_unknown_joints_are_one_line(tmp_path):
  np.testing.assert_array_equal(
    oks_nms.joint_sigmas(coco_format.COCO_KEYPOINTS), coco_format.COCO_SIGMAS
  )
  np.testing.assert_array_equal(
    oks_nms.joint_sigmas(coco_format.CROWDPOSE_KEYPOINTS), coco_format.CROWDPOSE_SIGMAS
  )
  with pytest.raises(ValueError) as e:
    oks_nms.joint_sigmas(["left_shoulder", "right_shoulder", "left_thumb", "right_thumb"])
  assert str(e.value) == "no OKS sigma known for 'left_thumb', 'right_thumb' (of the 4 joints)"
  # The flags: thresholds in (0, 1] and [0, 1), checked before anything is read.
  for flag, needles in (("--oks_nms=0", ("--oks_nms=0.0", "(0, 1]")), ("--rescore=1", ("[0, 1)",))):
    r = run_cli(
      "experiments.predict",
      f"--workdir={tmp_path / 'run'}",
      f"--images={tmp_path}",
      f"--boxes={tmp_path / 'dets.json'}",
      flag,
      f"--output_dir={tmp_path / 'out'}",
    )
    one_line_error(r, *needles)


# --- OKS AP in the evaluation (`evaluators/oks.py`) ----------------------------------------


STATS = coco_eval.STAT_NAMES


def test_the_oks_evaluator_scores_training_as_evaluate_predictions_scores_its_results(
  coco_build, coco_run, tmp_path
):
  from heatpose_jax import evaluate
  from heatpose_jax.evaluation.evaluators import oks as oks_evaluator
  from heatpose_jax.training import checkpoints, metric_writer

  workdir, config = coco_run
  # Training's evaluation: OKS AP beside PCK in eval/<step>.json and metrics.jsonl.
  step = max(int(p.stem) for p in (workdir / "eval").glob("*.json"))
  logged = json.loads((workdir / "eval" / f"{step}.json").read_text())
  oks = logged["evals"]["oks"]
  assert "cascade" in logged and "PCK" in logged["metric"]
  assert (oks["sigmas_source"], oks["area"]) == ("coco", "annotation")
  assert (oks["num_people"], oks["num_images"]) == (4, 2)  # max_eval_examples: 4 of 5
  for m in ("coarse", "cascade"):
    assert list(oks[m]["stats"]) == list(STATS)
    assert all(0 <= v <= 1 or v == -1 for v in oks[m]["stats"].values())
  rows = [r for r in metric_writer.read_rows(str(workdir)) if "eval/oks/cascade/AP" in r]
  assert rows and rows[-1]["eval/oks/cascade/AP"] == oks["cascade"]["stats"]["AP"]
  assert {f"eval/oks/cascade/{s}" for s in STATS} <= set(rows[-1])

  # The same prediction pass again, its cascade written as a COCO results file by hand:
  # image frame through canvas_to_image, the example's image_id, score = mean joint score.
  mesh = one_device_mesh()
  params, _ = checkpoints.restore_params(str(workdir), from_config.abstract_params(config, mesh))
  ev = evaluate.build_evaluator(config, from_config.model(config), mesh, str(workdir))
  dict(ev.run(params))
  assert ev.result["evals"]["oks"] == oks  # what training logged
  preds, source = ev.preds, from_config.eval_examples(config)  # the examples' features
  examples = [source[i] for i in range(len(source))]
  assert preds["index"].tolist() == [int(ex["index"]) for ex in examples]
  # The annotation file's people that were evaluated (its crowd region, the person
  # without labels and the fifth person are not in the evaluation).
  ids = {int(ex["annotation_id"]) for ex in examples}
  val = json.loads(coco_build["val"]["path"].read_text())
  val["annotations"] = [a for a in val["annotations"] if a["id"] in ids]
  gt = _write(tmp_path / "gt.json", val)
  # The model's estimates (2 steps: AP about 0), and the labels plus 1 canvas px of
  # noise (AP between 0 and 1: the frames, images and areas must all be right).
  noisy = preds["joints"] + np.random.default_rng(0).normal(0, 1.0, preds["joints"].shape)
  got = oks_evaluator.evaluate({**preds, "cascade": noisy}, skeleton=ev.skeleton, pools=())
  assert 0.1 < got["cascade"]["stats"]["AP"] < 0.9
  for name, estimate, stats in (
    ("model", preds["cascade"], oks["cascade"]["stats"]),
    ("noisy", noisy, got["cascade"]["stats"]),
  ):
    m = np.asarray(preds["canvas_to_image"], np.float64)
    xy = np.einsum("nij,nkj->nki", m[:, :, :2], estimate) + m[:, None, :, 2]
    results = [
      {
        "image_id": int(ex["image_id"]),
        "category_id": 1,
        "keypoints": np.concatenate([xy[i], preds["scores"][i][:, None]], 1).ravel().tolist(),
        "score": float(np.mean(preds["scores"][i])),
      }
      for i, ex in enumerate(examples)
    ]
    res = _write(tmp_path / f"{name}.json", results)
    if name == "model":  # what `experiments.evaluate` writes for a COCO-format run
      work = tmp_path / "run"
      shutil.copytree(workdir, work)
      evaluate.evaluate_checkpoint(config, str(work), num_overlays=0, mesh=mesh)
      written = json.loads(
        (work / f"eval_{config.eval_split}" / "keypoint_results.json").read_text()
      )
      assert [r["image_id"] for r in written] == [r["image_id"] for r in results]
      for w, r in zip(written, results, strict=True):
        np.testing.assert_allclose(w["keypoints"], r["keypoints"], atol=1e-4)
        assert w["score"] == pytest.approx(r["score"], abs=1e-6)
    out = tmp_path / f"{name}_scores.json"
    r = run_cli(
      "experiments.evaluate_predictions",
      "--dataset=coco",
      f"--predictions={res}",
      f"--ground_truth={gt}",
      f"--output_json={out}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    scores = json.loads(out.read_text())
    want = [stats[s] for s in STATS]
    np.testing.assert_allclose([scores[s] for s in STATS], want, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(_pycocotools_stats(gt, res), want, atol=1e-9, err_msg=name)


def test_oks_sigmas_by_dataset_and_a_skeleton_without_them_is_one_line(tmp_path):
  from heatpose_jax.configs import coco as coco_config
  from heatpose_jax.evaluation.evaluators import oks

  assert oks.oks_sigmas(coco_format.COCO_KEYPOINTS)[1] == "coco"
  assert oks.oks_sigmas(coco_format.CROWDPOSE_KEYPOINTS)[1] == "crowdpose"
  config = coco_config.get_config("tiny")
  config.data_dir = str(tmp_path)  # unbuilt: the registered spec
  names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_thumb", "right_thumb"]
  skeleton = coco_format.make_skeleton(names, (), coco_format.derive_flip_pairs(names, "f"))
  try:
    dataset_specs.register(dataset_specs.coco_spec(skeleton, 0.75), replace=True)
    with pytest.raises(from_config.ConfigError) as e:
      from_config.check(config)
    assert str(e.value) == (
      "config.evals.oks: sigmas: no OKS sigma known for 'left_thumb', 'right_thumb' of the "
      "dataset's 6 joints: give sigmas=(6 numbers) or remove this evaluator"
    )
    config.evals.oks.sigmas = "0.079,0.079,0.107,0.107,0.05,0.05"
    from_config.check(config)
    config.evals.oks.sigmas = "coco"
    with pytest.raises(from_config.ConfigError, match=r"^config\.evals\.oks: sigmas='coco': "):
      from_config.check(config)
  finally:
    dataset_specs.register(dataset_specs.COCO, replace=True)
  # Predictions without a COCO-format build's annotations (another dataset).
  preds = {"joints": np.zeros((1, 6, 2)), "cascade": np.zeros((1, 6, 2))}
  with pytest.raises(ValueError, match=r"lack \['image_id', 'bbox', 'area'\]"):
    oks.evaluate(preds, skeleton=skeleton, pools=(), sigmas=(0.1,) * 6)


# --- a run keeps its dataset's spec (WORKDIR/dataset_spec.json) ----------------------------


def test_a_run_predicts_with_its_own_skeleton_without_the_data_dir(tmp_path):
  import shutil

  from heatpose_jax import predictor, train
  from heatpose_jax.configs import coco as coco_config

  names = coco_format.CROWDPOSE_KEYPOINTS
  f = fake_coco.write(tmp_path / "src", names=names, limbs=coco_format.COCO_SKELETON)
  data_dir = tmp_path / "data"
  build.build(
    "coco_keypoints",
    data_dir,
    config="crowdpose",
    annotations=[f"train={f['path']}", f"validation={f['path']}"],
    images=str(f["images"]),
  )
  config = coco_config.get_config("tiny,tfds=crowdpose")
  overrides = {
    "data_dir": str(data_dir),
    "phases.coarse.steps": 1,
    "phases.fine.steps": 0,
    "phases.joint.steps": 0,
    "batch_size": 4,
    "log_every": 1,
    "max_eval_examples": 4,
    "model.norm": "none",
  }
  config = from_config.with_overrides(config, overrides)
  workdir = tmp_path / "run"
  try:
    train.train_and_evaluate(config, str(workdir), mesh=one_device_mesh())
    saved = dataset_specs.read_spec_file(str(workdir / "dataset_spec.json"))
    assert saved == datasets.built_spec("coco_keypoints", "crowdpose", str(data_dir))
    oks = json.loads((workdir / "eval" / "1.json").read_text())["evals"]["oks"]
    # CrowdPose's sigmas go with its area, 0.53 × the box's w · h (crowdposetools').
    assert (oks["sigmas_source"], oks["area"]) == ("crowdpose", "box053")
    # A workdir from before the file: the data dir's build, as before.
    old = tmp_path / "old_run"
    shutil.copytree(workdir, old)
    (old / "dataset_spec.json").unlink()
    dataset_specs.register(dataset_specs.COCO, replace=True)  # a fresh process's registry
    assert predictor.Predictor.from_workdir(str(old), spatial_model=False).names == names
    # The data dir gone: the run's own spec (names, flip pairs, limbs), not COCO's 17.
    shutil.rmtree(data_dir)
    dataset_specs.register(dataset_specs.COCO, replace=True)
    pred = predictor.Predictor.from_workdir(str(workdir), spatial_model=False)
    assert pred.names == names and pred.skeleton == saved.skeleton
    assert ("left_shoulder", "right_shoulder") in pred.skeleton.flip_pairs
    assert ("head", "neck") in pred.skeleton.limbs
  finally:
    dataset_specs.register(dataset_specs.COCO, replace=True)
  out = tmp_path / "out"
  r = run_cli(
    "experiments.predict",
    f"--workdir={workdir}",
    f"--images={f['images']}",
    f"--boxes={f['path']}",  # the annotation file's people: ground-truth boxes
    f"--output_dir={out}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((out / "keypoint_results.json").read_text())
  assert len(results) == len(_people(f["data"])) and len(results[0]["keypoints"]) == 3 * 14


# --- MPII's JSON layout (HRNet / mmpose) ---------------------------------------------------


def _hrnet_json(persons: list[dict]) -> list[dict]:
  """HRNet's layout of fake MPII persons: 1-based centre and joints, joints_vis 1 = labelled."""
  out = []
  for p in persons:
    pts, vis = np.zeros((16, 2)), np.zeros(16)
    for q in p["points"]:
      pts[q["id"]] = q["x"], q["y"]
      vis[q["id"]] = 1
    out.append(
      {"image": p["image_name"], "center": list(p["objpos"]), "scale": p["scale"],
       "joints": pts.tolist(), "joints_vis": vis.tolist()}
    )  # fmt: skip
  return out


def test_mpii_json_layout_reads_as_the_mat(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  info = fake.write_fake_mpii(tmp_path / "mat", split_file="h5")
  from_mat = fake.build(mpii.Mpii, tmp_path / "data_mat", tmp_path / "mat")
  ok = {(p["image_index"], p["person_index"]): p for p in info["persons"] if p["kind"] == "ok"}
  val_keys = set(info["validation"])
  root = tmp_path / "json"
  (root / "annot").mkdir(parents=True)
  (root / "images").symlink_to(tmp_path / "mat" / "images")
  split_persons = {
    "train": [p for k, p in ok.items() if k not in val_keys],
    "validation": [p for k, p in ok.items() if k in val_keys],
  }
  for split, name in (("train", "train.json"), ("validation", "valid.json")):
    _write(root / "annot" / name, _hrnet_json(split_persons[split]))
  # The test persons: objpos and scale (joints, where a file has them, are not read).
  tests = [p for p in info["persons"] if p["kind"] == "test"]
  _write(
    root / "annot" / "test.json",
    [{**e, "joints_vis": [0] * 16} for e in _hrnet_json([{**p, "points": []} for p in tests])],
  )
  heads = np.array([p["head"] for p in split_persons["validation"]], np.float64)
  sio.savemat(
    root / "annot" / "gt_valid.mat", {"headboxes_src": heads.reshape(-1, 2, 2).transpose(1, 2, 0)}
  )
  from_json = fake.build(mpii.Mpii, tmp_path / "data_json", root)
  assert "mpii: no split file" not in caplog.text
  same = ("joints", "joints_valid", "center", "scale", "torso_box", "torso_size")
  split_persons["test"] = tests
  for split in ("train", "validation", "test"):
    a, b = fake.read_split(from_mat, split), fake.read_split(from_json, split)
    assert len(a) == len(b) == len(split_persons[split])
    for x, y in zip(a, b, strict=True):
      assert x["image_name"] == y["image_name"]
      for key in same + (("head_box", "head_size") if split == "validation" else ()):
        np.testing.assert_allclose(x[key], y[key], err_msg=key)  # head boxes: gt_valid.mat
      assert (y["image_index"], y["person_index"]) == (-1, -1)
      np.testing.assert_array_equal(y["joints_visible"], y["joints_valid"])  # labelled = 1 there
