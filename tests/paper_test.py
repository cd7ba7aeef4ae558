"""The paper's experiments (studies/paper.py) on `tiny_data`: every experiment
writes its figures and a table with finite numbers (runs trained in this
process); then `python -m experiments.paper` reuses the finished runs, resumes
an unfinished one in a training subprocess without retraining it, and rewrites
the outputs."""

import json
import math

import jax
import pytest

from conftest import STUDY_OVERRIDES, SYNTHETIC_CONFIG, config_flags, run_cli
from heatpose_jax.configs import synthetic
from heatpose_jax.core import sharding
from studies import paper, runs

POOLS = (8, 16)
RUNS = ["pool8", "pool16", "standard8", "nodropout8", "stddropout8", "unnormalized"]

# Columns every table must fill with finite numbers (rows that are "n/a" by
# design, the label-noise row's PCK, are left out below), rows, figures.
EXPECTED = {
  "pooling": (["σ Head", "σ Wrist", "removed", "PCK@0.5 All"], 4, ["pck_all_joints.png"]),
  "cascade": (
    ["σ Head", "σ Shoulder", "PCK@0.05 Head", "PCK@0.5 Wrist"],
    4,
    ["x_error_histograms.png", "pck_head_wrist.png"],
  ),
  "shared_features": (
    ["params coarse", "params fine", "params total", "PCK@0.5 Wrist", "PCK@0.5 All"],
    2,
    ["pck_wrist.png"],
  ),
  "spatial_dropout": (
    ["PCK@0.5 Wrist", "train E1", "val E1"],
    3,
    ["pck_wrist.png", "loss_curves.png"],
  ),
  "timing": (
    ["coarse ms (batch 2)", "fine ms (batch 2)", "cascade ms (batch 2)"],
    2,
    ["forward_ms.png"],
  ),
  "mpii_table": (["Head", "Wrist", "Ankle", "UBody", "Total"], 4, ["pck_all_joints.png"]),
}


def _config(tiny_data):
  c = synthetic.get_config("tiny")
  c.data_dir, c.tfds_config = tiny_data
  return runs.apply_overrides(c, STUDY_OVERRIDES)


def test_experiments_then_the_cli_reuses_the_runs(tiny_data, tmp_path):
  # One test: under pytest-xdist, a module fixture shared by two tests could be
  # built twice, in two workers.
  workdir = tmp_path / "paper"
  results = paper.run_experiments(
    _config(tiny_data),
    str(workdir),
    ["all"],
    pools=POOLS,
    max_parallel=0,
    timing_iters=2,
    timing_batch_sizes=(2,),
    command="python -m experiments.paper (test)",
    mesh=sharding.make_mesh(jax.devices()[:1]),
  )
  _check_outputs(workdir, results)
  _check_cli_reuse(workdir, tiny_data)


def _check_outputs(workdir, results):
  """Every experiment wrote its figures and a finite table, from the right runs."""
  assert sorted(p.name for p in (workdir / "runs").iterdir()) == sorted(RUNS)
  assert set(results) == set(paper.EXPERIMENTS)
  for name, (columns, num_rows, figures) in EXPECTED.items():
    out = workdir / name
    for f in figures:
      assert (out / f).stat().st_size > 1000, f"{name}/{f}"
    md = (out / "table.md").read_text()
    assert "seeds: 0" in md and "device:" in md and "experiments.paper" in md, md
    table = json.loads((out / "table.json").read_text())
    assert table == results[name]
    assert table["header"]["dataset"].startswith("synthetic/")
    rows = [r for r in table["rows"] if not r["name"].startswith("label noise")]
    assert len(rows) == num_rows, (name, [r["name"] for r in table["rows"]])
    for r in rows:
      for c in columns:
        v = r["values"][c]
        assert v is not None and math.isfinite(v), (name, r["name"], c, v)
  # The right runs and checkpoints were used.
  pooling = json.loads((workdir / "pooling" / "table.json").read_text())
  noise = next(r for r in pooling["rows"] if r["name"].startswith("label noise"))
  assert noise["values"]["σ Head"] == 0.0  # the tiny builder injects no label noise
  assert any("phase 1, step 1" in r["name"] for r in pooling["rows"])
  shared = [
    r["values"]
    for r in json.loads((workdir / "shared_features" / "table.json").read_text())["rows"]
  ]
  assert shared[0]["params coarse"] == shared[1]["params coarse"]
  assert abs(shared[0]["params fine"] - shared[1]["params fine"]) / shared[0]["params fine"] < 0.05
  timing = json.loads((workdir / "timing" / "table.json").read_text())
  assert all(r["values"]["fine ms (batch 2)"] >= 0 for r in timing["rows"])
  # Every checkpoint is kept: the phase ends 1 and 2.
  assert runs.checkpoint_steps(str(workdir / "runs" / "pool8")) == [1, 2]
  summary = (workdir / "summary.md").read_text()
  assert all(f"## {n}" in summary for n in EXPECTED)
  assert "](timing/forward_ms.png)" in summary


def _check_cli_reuse(workdir, tiny_data):
  """The CLI reuses the finished runs and resumes an unfinished one in a training
  subprocess without retraining it, and rewrites the outputs."""
  before = {str(p): p.stat().st_mtime for p in (workdir / "runs").glob("*/checkpoints/*")}
  (workdir / "mpii_table" / "table.json").unlink()
  # No final evaluation: unfinished; its checkpoints are complete, so it only evaluates.
  (workdir / "runs" / "nodropout8" / "eval" / "2.json").unlink()
  data_dir, tfds_config = tiny_data
  p = run_cli(
    "experiments.paper",
    "--experiment=pooling,shared_features,spatial_dropout,mpii_table",
    f"--config={SYNTHETIC_CONFIG}:tiny",
    f"--workdir={workdir}",
    *config_flags({**STUDY_OVERRIDES, "data_dir": data_dir, "tfds_config": tfds_config}),
    "--pools=8,16",
    "--max_parallel=1",
    "--compilation_cache_dir=",
    timeout=600,
  )
  log = p.stdout + p.stderr
  assert p.returncode == 0, log[-6000:]
  assert log.count("reusing finished run") == len(RUNS) - 1, log[-3000:]
  assert "training nodropout8 (resuming from step 2" in log, log[-3000:]
  train_log = (workdir / "runs" / "nodropout8" / "train.log").read_text()
  assert " ETA " not in train_log, train_log[-2000:]  # no step was taken (no progress line)
  assert (workdir / "runs" / "nodropout8" / "eval" / "2.json").exists()
  after = {str(p): p.stat().st_mtime for p in (workdir / "runs").glob("*/checkpoints/*")}
  assert after == before
  assert json.loads((workdir / "mpii_table" / "table.json").read_text())["rows"]
  assert "## timing" in (workdir / "summary.md").read_text()  # kept from the first invocation


def test_run_overrides_follow_the_paper():
  base = synthetic.get_config("tiny")
  std = runs.make_run(base, "/w", "standard8", 0, checkpoints_per_run=10).config
  assert std.model.standard_cascade and std.phases.joint.steps == 0
  assert std.phases.fine.steps == base.phases.fine.steps + base.phases.joint.steps
  run = runs.make_run(base, "/w", "nodropout8", 2, checkpoints_per_run=10)
  assert run.directory == "/w/runs/nodropout8_seed2" and run.config.seed == base.seed + 2
  assert run.config.model.dropout == "none" and run.config.model.pool_factor == 8
  # All checkpoints are kept, about checkpoints_per_run of them.
  total = runs.total_steps(run.config)
  assert run.config.checkpoint_every >= total / 10
  assert run.config.keep_checkpoints >= total // run.config.checkpoint_every + 3
  pool = base.model.pool_factor  # the mpii_table models use the base config's pooling
  assert paper.runs_of("mpii_table", base) == (f"pool{pool}", "unnormalized")
  assert paper.runs_of("pooling", base, (8, 16)) == ("pool8", "pool16")
  with pytest.raises(ValueError, match="unknown experiment"):
    paper.runs_of("nope", base)
  with pytest.raises(ValueError, match="must include it"):
    paper.run_experiments(base, "/nonexistent", ["spatial_dropout"], pools=(16,))
