"""The precision and regularization studies end to end on `tiny_data` (a few steps,
2 seeds, runs trained in this process): the JSON has every required key with
finite values, the figures exist, finished runs and records are reused (also by
the CLI, which trains nothing then), and the label-noise runs differ from the
clean ones in their training labels only."""

import json
import math
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import STUDY_OVERRIDES, SYNTHETIC_CONFIG, config_flags, run_cli
from heatpose_jax import from_config
from heatpose_jax.configs import synthetic
from heatpose_jax.core import sharding
from heatpose_jax.data import input_pipeline
from studies import precision, regularization, runs

SEEDS = (0, 1)
GROUPS = ("clean", "noise")
# Untrained models at 32x32: a wide window keeps errors in every joint's σ.
WINDOW_PX = 16.0
POOL8 = {"model.pool_factor": 8}


def _config(tiny_data, **extra):
  c = synthetic.get_config("tiny")
  c.data_dir, c.tfds_config = tiny_data
  return runs.apply_overrides(c, {**STUDY_OVERRIDES, **extra})


def _mesh():
  return sharding.make_mesh(jax.devices()[:1])


def _finite(x, where=""):
  """Every number under `x` is finite (None is not)."""
  if isinstance(x, dict):
    for k, v in x.items():
      _finite(v, f"{where}.{k}")
  elif isinstance(x, list):
    for i, v in enumerate(x):
      _finite(v, f"{where}[{i}]")
  else:
    assert isinstance(x, int | float) and math.isfinite(x), (where, x)


def _checkpoint_mtimes(workdir):
  return {str(p): p.stat().st_mtime for p in Path(workdir).glob("**/checkpoints/*")}


def test_precision_study(tiny_data, tmp_path, capsys):
  workdir, out = tmp_path / "work", tmp_path / "out"
  kw = dict(
    pools=(8,),
    window_px=WINDOW_PX,
    max_parallel=0,
    evals_per_run=1,
    checkpoints_per_run=1,
    command="precision (test)",
    mesh=_mesh(),
  )
  # Piece by piece: clean labels (2 seeds), then label noise (1 seed); the second
  # invocation's outputs merge both.
  # The headline is at the base config's pooling (tiny's 4x): run the study at 8x.
  first = precision.run_study(
    _config(tiny_data, **POOL8), str(workdir), str(out), groups=("clean",), seeds=SEEDS, **kw
  )
  assert "pool8/noise" in first["missing_groups"] and first["runs"] == ["pool8", "pool8_seed1"]
  res = precision.run_study(
    _config(tiny_data, **POOL8), str(workdir), str(out), groups=("noise",), seeds=(0,), **kw
  )
  assert json.loads((out / "precision.json").read_text()) == res
  assert res["runs"] == ["pool8", "pool8_seed1", "pool8_noise"]
  assert res["seeds"] == [0, 1]
  g = res["geometry"]
  assert g["input_hw"] == [32, 32] and g["pool"] == [8] and g["window_px"] == WINDOW_PX
  assert g["torso_px"] > 0 and g["context"] > 0
  for group in ("clean", "noise"):
    for key in ("sigma_x", "robust_sigma_x"):
      per_joint = res[key][group]["8"]
      assert set(per_joint) == {"coarse", "cascade"}
      assert len(per_joint["cascade"]) == 14
      _finite(per_joint, f"{key}.{group}")
    _finite(res["pck_at_0.05_by_run"][group]["8"], f"pck.{group}")
    for far in res["far_errors"][group]["8"].values():
      assert set(far) == {"share", "variance_share"}
      assert all(0 <= far[k]["mean"] <= 1 for k in far if far[k]["mean"] is not None)
  for key, n in (("sigma_x_ratio_headline", 2), ("sigma_x_ratio_headline_noise", 1)):
    r = res[key]
    _finite([r["mean"], r["std"], *r["per_seed"]], key)
    assert r["n"] == n and r["pool"] == 8
  # The headline keys: the ratio's mean and std, PCK@0.05 per seed (%).
  assert res["main_pool"] == 8
  assert res["sigma_x_ratio_cascade_over_coarse"] == res["sigma_x_ratio_headline"]["mean"]
  assert res["sigma_x_ratio_cascade_over_coarse_std"] == res["sigma_x_ratio_headline"]["std"]
  assert set(res["pck_at_0.05"]) == {"coarse", "cascade"}
  for m in ("coarse", "cascade"):
    assert len(res["pck_at_0.05"][m]) == 2 and all(0 <= v <= 100 for v in res["pck_at_0.05"][m])
  assert res["command"] == "precision (test)" and res["device"] and res["date"]
  assert res["missing_groups"] == [f"pool{p}/{k}" for p in (4, 16) for k in ("clean", "noise")]
  assert res["label_noise_px"]["input_px"] > 0
  for name in ("x_error_histograms", "pck_curves", "loss_curves"):
    assert (out / res["figures"][name]).stat().st_size > 1000, name
  md = (out / "precision.md").read_text()
  assert "Against the paper" in md and "3.13" in md and "precision (test)" in md
  rec = json.loads((out / "precision_records" / "pool8_noise.json").read_text())
  assert rec["seed"] == 0 and rec["label_noise_px"] > 0
  assert rec["curves"]["eval/val_e1"][0] == [2]  # the final evaluation

  # Another invocation reuses the records: nothing trains, nothing is predicted.
  before = _checkpoint_mtimes(workdir)
  capsys.readouterr()
  precision.run_study(
    _config(tiny_data, **POOL8), str(workdir), str(out), groups=GROUPS, seeds=(0,), **kw
  )
  log = capsys.readouterr().out
  assert log.count("reusing record") == 2 and "training" not in log, log
  assert _checkpoint_mtimes(workdir) == before

  # Without its record, a finished run is measured again (from the cached
  # predictions), not retrained: here through the CLI.
  (out / "precision_records" / "pool8_seed1.json").unlink()
  data_dir, tfds_config = tiny_data
  p = run_cli(
    "experiments.precision_study",
    f"--config={SYNTHETIC_CONFIG}:tiny",
    f"--workdir={workdir}",
    f"--out_dir={out}",
    *config_flags({**STUDY_OVERRIDES, **POOL8, "data_dir": data_dir, "tfds_config": tfds_config}),
    "--pools=8",
    "--groups=clean",
    "--seeds=1",
    f"--window_px={WINDOW_PX}",
    "--evals_per_run=1",
    "--max_parallel=1",
    "--compilation_cache_dir=",
  )
  assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
  assert "reusing finished run pool8_seed1" in p.stdout and "recorded pool8_seed1" in p.stdout
  assert _checkpoint_mtimes(workdir) == before
  again = json.loads((out / "precision.json").read_text())
  assert again["runs"] == res["runs"]
  ratio = again["sigma_x_ratio_headline"]["per_seed"]
  assert ratio == pytest.approx(res["sigma_x_ratio_headline"]["per_seed"])

  # A run trained with another config is refused, never measured as this one's.
  record = (out / "precision_records" / "pool8_seed1.json").read_bytes()
  with pytest.raises(ValueError, match=r"pool8_seed1 was trained with another config \(augment"):
    precision.run_study(
      _config(tiny_data, **POOL8, **{"augment.window_jitter": 0.5}),
      str(workdir),
      str(out),
      groups=("clean",),
      seeds=(1,),
      **kw,
    )
  assert (out / "precision_records" / "pool8_seed1.json").read_bytes() == record
  assert _checkpoint_mtimes(workdir) == before


def test_noise_runs_differ_in_training_labels_only(tiny_data, tmp_path):
  plan = precision.plan_study(
    _config(tiny_data),
    str(tmp_path),
    pools=(8,),
    noise_px=8.0,
    window_px=0.0,
    checkpoints_per_run=4,
    evals_per_run=8,
  )
  clean, noisy = plan.run(8, "clean", 0), plan.run(8, "noise", 0)
  a, b = clean.config.to_dict(), noisy.config.to_dict()
  assert {k for k in a if a[k] != b[k]} == {"label_noise"}
  assert a["label_noise"] == 0 and b["label_noise"] == plan.noise_canvas_px > 0
  ta = next(iter(from_config.train_batches(clean.config, str(tmp_path / "a"))))
  tb = next(iter(from_config.train_batches(noisy.config, str(tmp_path / "b"))))
  np.testing.assert_array_equal(ta["image"], tb["image"])
  np.testing.assert_array_equal(ta["joints_valid"], tb["joints_valid"])
  valid = ta["joints_valid"] > 0
  # |N(0, σ²)| has mean 0.8 σ.
  assert 0.3 < np.abs(ta["joints"] - tb["joints"])[valid].mean() / plan.noise_canvas_px < 2
  # Evaluation sees the same (clean) labels.
  ea, eb = (
    next(iter(from_config.eval_batches(c, from_config.eval_source(c, str(tmp_path)))))
    for c in (clean.config, noisy.config)
  )
  for k in ("image", "joints", "joints_valid"):
    np.testing.assert_array_equal(ea[k], eb[k])


def test_regularization_study(tiny_data, tmp_path, capsys):
  workdir, out, figs = tmp_path / "work", tmp_path / "out", tmp_path / "figs"
  # 2 coarse steps, evaluated after each (>= 10 evaluations would need >= 10 steps).
  config = _config(tiny_data, **{"phases.coarse.steps": 2, "phases.fine.steps": 0})
  kw = dict(
    num_train=16,
    max_parallel=0,
    checkpoints_per_run=1,
    figures_dir=str(figs),
    command="regularization (test)",
    mesh=_mesh(),
  )
  # Piece by piece: the paper's model with 2 seeds, then the standard cascade (the
  # other architecture); the outputs merge them. (The dropout variants train the
  # same way: their configs are checked below, without training.)
  regularization.run_study(
    config, str(workdir), str(out), groups=("spatial_dropout",), seeds=SEEDS, **kw
  )
  groups = ("spatial_dropout", "standard_cascade")
  res = regularization.run_study(
    config, str(workdir), str(out), groups=groups[1:], seeds=(0,), **kw
  )
  assert json.loads((out / "regularization.json").read_text()) == res
  assert res["seeds"] == [0, 1] and res["num_train"] == 16
  g = res["geometry"]  # recorded with every result (issue 17)
  assert g["pool"] == 8 and g["torso_px"] > 0 and len(g["input_hw"]) == 2 and g["context"] > 0
  assert res["dataset"].startswith("synthetic/") and "num_train16" in res["dataset"]
  assert set(res["results"]) == set(groups)
  assert res["missing_groups"] == ["standard_dropout", "no_dropout"]
  for g, r in res["results"].items():
    _finite({k: r["final"][k] for k in ("val_e1", "train_e1", "val_pck_all", "train_pck_all")}, g)
    _finite({k: r["overfit"][k] for k in ("val_e1_rise_rel", "e1_val_over_train")}, g)
    assert r["final"]["val_e1"]["n"] == (2 if g == "spatial_dropout" else 1)
  comps = res["comparisons"]
  assert set(comps) == {
    "spatial_dropout_vs_no_dropout",
    "spatial_dropout_vs_standard_dropout",
    "spatial_dropout_vs_standard_cascade",
  }
  c = comps["spatial_dropout_vs_standard_cascade"]["val_pck_all"]
  _finite([c["advantage"], c["spread"]], "comparison")
  assert comps["spatial_dropout_vs_no_dropout"]["val_pck_all"] is None  # not measured
  v = res["verdict"]
  assert (
    "over-fits most" in v or "no variant's validation E1 rises" in v
  ) and "paper's ordering" in v
  assert (figs / "regularization_curves.png").stat().st_size > 1000
  assert res["figures"]["curves"] == os.path.relpath(figs / "regularization_curves.png", out)
  rec = json.loads((out / "regularization_records" / "standard8.json").read_text())
  assert rec["curves"]["val_e1"][0] == rec["curves"]["pck_all"][0] == [1, 2]
  assert rec["steps"]["fine"] == rec["steps"]["joint"] == 0
  # The small training set really is small.
  cfg = runs.apply_overrides(config, {"tfds_config": res["dataset"].split("/")[1].split(",")[0]})
  assert len(from_config.dataset_source(cfg, "train")) == 16

  before = _checkpoint_mtimes(workdir)
  capsys.readouterr()
  again = regularization.run_study(config, str(workdir), str(out), groups=groups, seeds=(0,), **kw)
  log = capsys.readouterr().out
  assert log.count("reusing record") == 2 and "training" not in log, log
  assert _checkpoint_mtimes(workdir) == before
  assert again["results"] == res["results"]

  # A run of 1000 steps is evaluated >= 10 times; fewer evaluations are refused.
  long = runs.apply_overrides(
    config, {"phases.coarse.steps": 700, "phases.fine.steps": 150, "phases.joint.steps": 150}
  )
  plan = regularization.plan_study(
    long, str(workdir), num_train=16, evals_per_run=12, checkpoints_per_run=2
  )
  configs = {g: plan.run(g, 1).config for g in regularization.GROUPS}
  for c in configs.values():
    assert runs.total_steps(c) // c.eval_every >= 10 and c.tfds_config == plan.base.tfds_config
    assert c.seed == config.seed + 1 and c.model.pool_factor == 8
  assert [configs[g].model.dropout for g in regularization.GROUPS] == [
    "spatial",
    "standard",
    "none",
    "spatial",
  ]
  std = configs["standard_cascade"]
  assert std.model.standard_cascade and std.phases.joint.steps == 0 and std.phases.fine.steps == 300
  with pytest.raises(ValueError, match="evals_per_run"):
    regularization.plan_study(
      long, str(workdir), num_train=16, evals_per_run=5, checkpoints_per_run=2
    )


def test_cpu_geometry_keeps_the_papers_proportions():
  """`synthetic.py:cpu`: cell / torso ≈ 0.1 and window / torso ≈ 0.45 as the paper's
  8× FLIC model (8 / 80, 36 / 80), torso ≥ 40 px, the paper's σ, measured on the
  renders its dataset holds (the default config's first test images)."""
  from heatpose_jax.data import synthetic_dataset

  c = synthetic.get_config("cpu")
  from_config.check(c)
  cfg = synthetic_dataset.CONFIGS[c.tfds_config or synthetic_dataset.DEFAULT_CONFIG]
  torso = []
  for i in range(12):
    ex = synthetic_dataset.make_example(cfg, "test", i)
    m = input_pipeline.crop_transform(
      ex, crop_mode=c.crop_mode, canvas_hw=tuple(c.input_hw), box_scale=c.box_scale
    )
    torso.append(float(ex["torso_size"]) / float(m[0, 0]))
  t = float(np.median(torso))
  assert 40 <= t <= 48, t
  assert c.model.pool_factor / t == pytest.approx(0.1, abs=0.015)
  assert c.model.context / t == pytest.approx(0.45, abs=0.05)
  assert (c.model.sigma_coarse, c.model.sigma_fine) == (1.5, 1.5)
  assert precision.main_pool(c) == 4


def test_far_errors_are_the_tails_the_robust_sigma_leaves_out():
  # Bins centred at -3, -1, 1, 3 px in a ±4-px window: beyond ±2 px are the outer two.
  rec = {
    "hist_edges": [-4, -2, 0, 2, 4],
    "histograms": {"cascade": {"A": [1, 3, 4, 0], "B": [0, 1, 0, 1]}},
  }
  far = precision.far_errors(rec, "cascade")
  assert far["share"] == pytest.approx(2 / 10)
  assert far["variance_share"] == pytest.approx((9 + 9) / (9 + 9 + 8 * 1))


def test_cpu_schedules_the_joint_one_by_default_and_the_papers_by_argument():
  phases = lambda c: [  # noqa: E731
    (p.steps, p.learning_rate, tuple(p.loss_weights)) for p in c.phases.values()
  ]
  lr = synthetic.get_config("cpu").phases.coarse.learning_rate
  assert phases(synthetic.get_config("cpu")) == [
    (1200, lr, (1.0, 0.0)),
    (0, lr, (0.0, 1.0)),
    (800, lr, (1.0, 1.0)),
  ]
  paper = synthetic.get_config("cpu,schedule=paper")
  assert [s for s, _, _ in phases(paper)] == [1200, 400, 400]
  assert paper.phases.joint.loss_weights == (1.0, 0.1) and paper.phases.joint.learning_rate < lr
  assert [s for s, _, _ in phases(synthetic.get_config("tiny,schedule=paper"))] == [1000, 250, 250]
  with pytest.raises(ValueError, match="schedule='papers'"):
    synthetic.get_config("cpu,schedule=papers")


@pytest.mark.parametrize(
  "section, key, on", [("eval", "flip_test", True), ("augment", "window_jitter", 1.0)]
)
def test_a_field_added_at_its_neutral_value_keeps_the_records_matched(section, key, on):
  # Records made before the field existed stay matched while it is off.
  from studies import records

  c = synthetic.get_config("cpu,schedule=paper")
  before = records.config_digest(c, study="x")
  with c.unlocked():
    del c[section][key]
  assert records.config_digest(c, study="x") == before
  c[section][key] = on
  assert records.config_digest(c, study="x") != before


def test_the_verdict_tells_a_wide_train_val_gap_from_too_short_runs():
  def agg(ratio):
    return {"overfit": {"val_e1_rise_rel": {"mean": 0.0}, "e1_val_over_train": {"mean": ratio}}}

  label = {"a": "SpatialDropout", "b": "no dropout"}
  wide = regularization._overfit_sentence({"a": agg(3.6), "b": agg(5.3)}, "With 100", label)
  assert "no variant's validation E1 rises" in wide and "regularization matters" in wide
  narrow = regularization._overfit_sentence({"a": agg(1.5), "b": agg(1.7)}, "With 300", label)
  assert "too short or the set too large" in narrow
