"""The evaluator extension point (`config.evals`, `heatpose_jax.evaluation.evaluators`).

An evaluator from outside the library (`tests/toy_evaluator.py`, configured by
its dotted path; no library file edited) and two entries of the built-in `pck`
(PCK, torso-normalized, beside PCKh, head-normalized) run over the headline's one
prediction pass: in `build_evaluator`, in training's evaluation (metrics.jsonl)
and through `python -m experiments.evaluate`, which imports the module in its
own process. The headline's scalars and result stay as they were. A bad entry is
one line naming `config.evals.<name>`.
"""

import json
import shutil

import numpy as np
import pytest

from conftest import one_device_mesh, one_line_error, run_cli
from heatpose_jax import evaluate, from_config, train
from heatpose_jax.configs import synthetic
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.training import checkpoints, metric_writer

# The tests sharing the session fixture `tiny_run` run on one xdist worker (built once).
pytestmark = pytest.mark.xdist_group("tiny_run")

TOY = "tests.toy_evaluator"
EVALS = {
  "toy": {"type": TOY, "scale": 2.0},
  "pck_torso": {"type": "pck", "normalizer": "torso_size", "thresholds": (0.1, 0.2)},
  "pckh": {"type": "pck", "normalizer": "head_size", "thresholds": (0.5,), "curve_max": 0.5},
}


def _run_config(workdir):
  config = from_config.load_run_config(str(workdir))
  for name, entry in EVALS.items():
    config.evals[name] = entry
  return config


def test_evaluators_score_the_one_prediction_pass(tiny_run, monkeypatch):
  config = _run_config(tiny_run)
  config.canvas_cache = False  # reads the split: nothing is written into the shared run
  mesh = one_device_mesh()
  params, _ = checkpoints.restore_params(str(tiny_run), from_config.abstract_params(config, mesh))
  passes = []
  real = evaluator_lib.predict_dataset
  monkeypatch.setattr(
    evaluator_lib, "predict_dataset", lambda *a, **k: passes.append(1) or real(*a, **k)
  )
  ev = evaluate.build_evaluator(config, from_config.model(config), mesh, str(tiny_run))
  got = dict(ev.run(params))
  assert len(passes) == 1
  preds, result, skeleton = ev.preds, ev.result, from_config.skeleton(config)

  # The headline: the names and values of a run without evaluators.
  headline = evaluator_lib.score(
    preds,
    skeleton,
    normalizer=config.eval.normalizer,
    thresholds=config.eval.thresholds,
    curve_max=config.eval.curve_max,
  )
  np.testing.assert_equal({k: v for k, v in got.items() if k.split("/")[0] not in EVALS},
                          dict(evaluator_lib.scalars(headline)))  # fmt: skip
  assert "cascade/PCKh@0.5/Total" in got and "val_e1" in got
  np.testing.assert_equal(result["cascade"], headline["cascade"])

  # The toy, from outside the library: 2 × the mean pixel error.
  valid = preds["joints_valid"] > 0
  err = np.linalg.norm(preds["cascade"] - preds["joints"], axis=-1)[valid].mean()
  assert got["toy/cascade/mean_px_error"] == pytest.approx(2 * err)
  # PCK (torso) and PCKh (head) in one run: each the headline's tables with its normalizer.
  torso = evaluator_lib.score(
    preds, skeleton, normalizer="torso_size", thresholds=(0.1, 0.2), curve_max=0.2
  )
  np.testing.assert_equal(
    result["evals"]["pck_torso"]["cascade"]["table"], torso["cascade"]["table"]
  )
  assert got["pck_torso/cascade/PCK@0.2/Total"] == torso["cascade"]["table"]["0.2"]["Total"]
  assert got["pckh/cascade/PCKh@0.5/Total"] == got["cascade/PCKh@0.5/Total"]
  assert set(result["evals"]) == set(EVALS)
  json.dumps(result)  # JSON-ready
  assert "toy:\nmean pixel error" in ev.format_evals() and "pck_torso:\n" in ev.format_evals()


def test_training_logs_each_evaluator_under_its_name(tiny_run, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  # Resumed at its last step with evaluators added (a safe change): only the final evaluation.
  result = train.train_and_evaluate(_run_config(work), str(work), mesh=one_device_mesh())
  assert set(result["evals"]) == set(EVALS)
  names = ["eval/cascade/PCKh@0.5/Total", "eval/toy/cascade/mean_px_error"]
  names += ["eval/pck_torso/coarse/PCK@0.2/Total"]
  logged = metric_writer.read_scalars(str(work), names)
  for n in names:
    assert logged[n][0].tolist() == [result["step"]], n
  saved = json.loads((work / "eval" / f"{result['step']}.json").read_text())
  assert saved["evals"]["toy"]["cascade"] == pytest.approx(result["evals"]["toy"]["cascade"])


def test_the_evaluate_cli_imports_the_configured_evaluators(tiny_run, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  config = json.loads((work / "config.json").read_text())

  # A bad argument: one line naming the entry, before a model is built.
  config["evals"] = {"toy": {"type": TOY, "scael": 2.0}}
  (work / "config.json").write_text(json.dumps(config))
  one_line_error(run_cli("experiments.evaluate", f"--workdir={work}"), "config.evals.toy", "scael")

  config["evals"] = EVALS
  (work / "config.json").write_text(json.dumps(config))
  r = run_cli(
    "experiments.evaluate",
    f"--workdir={work}",
    "--num_overlays=0",
    "--flip_test",
    "--fuse_coarse",
    "--evals=errors",
  )
  assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
  assert "the cascade fixes" in r.stdout  # --evals adds one with its defaults
  assert "toy:\nmean pixel error" in r.stdout
  results = json.loads((work / "eval_test" / "results.json").read_text())
  assert results["flip_test"] is True and "step 4, flip test" in r.stdout
  assert results["fuse_coarse"] is True
  assert set(results["evals"]) == {*EVALS, "errors"}
  errors = results["evals"]["errors"]
  for m in ("coarse", "cascade"):  # every annotated joint is in one class
    assert sum(errors[m][c]["all"] for c in ("correct", "swap", "near", "miss")) == pytest.approx(
      100
    )

  assert results["evals"]["toy"]["cascade"] > 0
  assert "0.5" in results["cascade"]["table"]  # the headline where it always was
  table = (work / "eval_test" / "table.txt").read_text()
  assert "\ntoy:\nmean pixel error" in table and "\npck_torso:\nPCK@0.2" in table


@pytest.mark.parametrize(
  "name, entry, needles",
  [
    ("x", {"type": "no_such_evaluator"}, ["no module", "no_such_evaluator"]),
    ("x", {"type": "my_evals.nope"}, ["no module 'my_evals'"]),
    ("x", {"type": "heatpose_jax.evaluation.metrics"}, ["has no evaluate() or scalars()"]),
    ("x", {"normalizer": "torso_size"}, ["needs a type"]),
    ("x", {"type": "pck"}, ["normalizer"]),
    ("x", {"type": "pck", "normaliser": "torso_size"}, ["normaliser"]),
    ("x", {"type": "pck", "normalizer": "bbox"}, ["'bbox'"]),
    ("x", {"type": "sigma", "outlier_px": 0.0}, ["outlier_px"]),
    ("cascade", {"type": "pck", "normalizer": "torso_size"}, ["headline"]),
  ],
)
def test_a_bad_entry_is_one_line_naming_it(name, entry, needles):
  config = synthetic.get_config("tiny")
  config.evals[name] = entry
  with pytest.raises(from_config.ConfigError) as e:
    from_config.check(config)
  msg = str(e.value)
  assert msg.startswith(f"config.evals.{name}: ") and "\n" not in msg, msg
  for n in needles:
    assert n in msg, (n, msg)


def test_the_default_config_has_no_evaluators_and_checks():
  config = synthetic.get_config("tiny")
  assert not config.evals
  from_config.check(config)
  config.evals.sigma_10 = {"type": "sigma", "outlier_px": 10.0}
  config.evals.toy = {"type": TOY}
  from_config.check(config)


@pytest.mark.xdist_group("evaluators_unit")
def test_errors_classes_and_what_the_cascade_fixes():
  from heatpose_jax.data import dataset_specs
  from heatpose_jax.evaluation.evaluators import errors

  skeleton = dataset_specs.SPECS["synthetic"].skeleton
  j = skeleton.index
  rng = np.random.default_rng(0)
  gt = rng.uniform(10, 50, (3, skeleton.num_joints, 2))
  head = np.array([4.0, 4.0, 0.0])  # the third example has no normalizer: not evaluated
  valid = np.ones(gt.shape[:2], np.int32)
  coarse, cascade = gt + 1.0, gt.copy()  # coarse off by sqrt(2) = 0.71 t, the cascade exact
  wl, wr, hd = j("l_wrist"), j("r_wrist"), j("head_top")
  coarse[0, wl] = gt[0, wr]  # left/right swap
  coarse[0, hd] += (2.5, 0.0)  # (3.5, 1) from the joint: 1.82 t, near
  coarse[1, hd] += (9.0, 0.0)  # miss; the cascade keeps it: broken once, fixed twice
  cascade[1, hd] = coarse[1, hd]
  valid[1, j("l_knee")] = 0
  preds = {"coarse": coarse, "cascade": cascade, "joints": gt, "joints_valid": valid}
  preds["head_size"] = head
  r = errors.evaluate(preds, skeleton=skeleton, pools={}, normalizer="head_size", alpha=0.5)
  n = 2 * skeleton.num_joints - 1  # evaluated joints
  share = lambda k: pytest.approx(100.0 * k / n)  # noqa: E731
  assert r["coarse"]["swap"]["all"] == share(1) and r["coarse"]["swap"]["l_wrist"] == 50.0
  assert r["coarse"]["near"]["all"] == share(1) and r["coarse"]["miss"]["all"] == share(1)
  assert r["coarse"]["correct"]["all"] == share(n - 3)
  assert r["cascade"]["correct"]["all"] == share(n - 1) and r["cascade"]["miss"]["all"] == share(1)
  # `correct` is PCK's count, on the joints PCK evaluates.
  from heatpose_jax.evaluation import metrics

  (ok,), evaluated = metrics.pck(coarse, gt, valid, head, 0.5)
  assert r["coarse"]["correct"]["all"] == pytest.approx(100.0 * ok[evaluated].mean())
  ref = r["refinement"]
  assert (ref["fixed"], ref["broken"], ref["num_joints"]) == (2, 0, n)
  first = ref["bins"][1]  # [0.5, 1): the joints off by 0.71 t, all corrected
  assert first["share"] == share(n - 3) and first["cascade_correct"] == 100.0
  assert sum(b["share"] for b in ref["bins"]) == pytest.approx(100.0)
  assert "fixes 2 and breaks 0" in errors.format_table(r)
  assert dict(errors.scalars(r))["cascade/miss"] == share(1)


def test_errors_split_by_the_view_of_the_figure():
  """A figure seen from the back has its left limbs on the image's left; a model
  that takes every figure as seen from the front swaps exactly those."""
  from heatpose_jax.data import dataset_specs
  from heatpose_jax.evaluation.evaluators import errors

  skeleton = dataset_specs.SPECS["synthetic"].skeleton
  j = skeleton.index
  front = np.zeros((skeleton.num_joints, 2))
  for name, xy in {"r_shoulder": (20, 20), "l_shoulder": (40, 20), "r_hip": (24, 50),
                   "l_hip": (36, 50), "r_knee": (24, 70), "l_knee": (36, 70),
                   "upper_neck": (30, 15), "head_top": (30, 5)}.items():  # fmt: skip
    front[j(name)] = xy
  perm = skeleton.flip_permutation
  back = front[perm]  # the same places, left and right exchanged: seen from the back
  tilted = front.copy()  # lying on its side, still seen from the front
  tilted[:, 0], tilted[:, 1] = 100 - front[:, 1], front[:, 0]
  gt = np.stack([front, back, tilted, front])
  valid = np.ones(gt.shape[:2], np.int32)
  valid[3, j("l_hip")] = 0  # the view of a figure without both hips is unknown
  np.testing.assert_array_equal(errors.view(gt, valid > 0, skeleton), [1, -1, 1, 0])

  guess = np.stack([front, front, tilted, front])  # every figure taken as seen from the front
  preds = {"cascade": guess, "joints": gt, "joints_valid": valid, "head_size": np.full(4, 8.0)}
  r = errors.evaluate(preds, skeleton=skeleton, pools={}, normalizer="head_size", alpha=0.5)
  by_view = r["by_view"]["cascade"]
  assert (by_view["front"]["figures"], by_view["back"]["figures"]) == (2, 1)
  assert by_view["front"]["correct"] == 100.0 and by_view["front"]["swap"] == 0.0
  # The shoulders, hips and knees swap; the midline and the unplaced joints (all at
  # the origin, as their partners) are right.
  assert by_view["back"]["swap"] == pytest.approx(100.0 * 6 / skeleton.num_joints)
  assert by_view["back"]["correct"] == pytest.approx(100.0 * 8 / skeleton.num_joints)
  assert "cascade back" in errors.format_table(r)
  assert dict(errors.scalars(r))["cascade/back/swap"] == by_view["back"]["swap"]

  # No figure's view known (no shoulders annotated): no view rows, no NaN scalars.
  preds["joints_valid"] = valid * (np.arange(skeleton.num_joints) != j("l_shoulder"))
  r = errors.evaluate(preds, skeleton=skeleton, pools={}, normalizer="head_size", alpha=0.5)
  assert r["by_view"] == {} and "by view" not in errors.format_table(r)
  assert all(np.isfinite(v) for _, v in errors.scalars(r))


@pytest.mark.parametrize("name", ["mpii", "lsp", "flic", "coco"])
def test_the_view_of_every_built_in_skeleton(name):
  """The same upright figure, seen from the front and mirrored as from the back,
  in each skeleton's own joint names (FLIC has no hips: its neck-less upper body
  uses the nose; COCO spells left and right out)."""
  from heatpose_jax.data import dataset_specs
  from heatpose_jax.evaluation.evaluators import errors

  skeleton = dataset_specs.SPECS[name].skeleton
  places = {"shoulder": 12, "hip": 8, "elbow": 16, "wrist": 18, "knee": 7, "ankle": 7}
  front = np.zeros((skeleton.num_joints, 2))
  for k, joint in enumerate(skeleton.model_joints):
    side = (
      -1 if joint.startswith(("r_", "right_")) else 1 if joint.startswith(("l_", "left_")) else 0
    )
    part = joint.split("_")[-1]
    y = {"shoulder": 20, "hip": 50, "elbow": 35, "wrist": 48, "knee": 70, "ankle": 90}.get(part, 5)
    front[k] = (50 + side * places.get(part, 0), y)  # the figure's right on the image's left
  back = front[skeleton.flip_permutation]
  gt = np.stack([front, back])
  np.testing.assert_array_equal(errors.view(gt, np.ones(gt.shape[:2], bool), skeleton), [1, -1])
