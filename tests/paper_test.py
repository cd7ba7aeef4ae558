"""`python -m experiments.paper --experiment=all` end to end on tiny synthetic
people: the seven runs train (two at a time), every experiment writes its figures
and a table with finite numbers, and a second invocation reuses every run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from heatpose_jax import paper

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "heatpose_jax" / "configs" / "synthetic.py")

# Columns every table must fill with finite numbers (rows that are "n/a" by
# design, e.g. the label-noise row's PCK, are listed per experiment below).
EXPECTED = {
  "pooling": (["σ Head", "σ Wrist", "removed", "PCK@0.5 All"], 6, ["pck_all_joints.png"]),
  "cascade": (
    ["σ Head", "σ Shoulder", "PCK@0.05 Head", "PCK@0.5 Wrist"],
    6,
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
    3,
    ["forward_ms.png"],
  ),
  "mpii_table": (["Head", "Wrist", "Ankle", "UBody", "Total"], 4, ["pck_all_joints.png"]),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  import tensorflow_datasets as tfds

  from heatpose_jax import synthetic_dataset as synthetic

  d = tmp_path_factory.mktemp("data")
  cfg = synthetic.custom_config("tiny", num_train=32, num_test=16)
  synthetic.Synthetic(data_dir=str(d), config=cfg).download_and_prepare(
    download_config=tfds.download.DownloadConfig()
  )
  return str(d), cfg.name


def _run(data, workdir, experiments="all"):
  data_dir, tfds_config = data
  env = dict(os.environ)
  env.update(
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHONUNBUFFERED="1",
  )
  cmd = [
    sys.executable,
    "-m",
    "experiments.paper",
    f"--experiment={experiments}",
    f"--config={CONFIG}:tiny",
    f"--workdir={workdir}",
    f"--config.data_dir={data_dir}",
    f"--config.tfds_config={tfds_config}",
    "--config.coarse_steps=4",
    "--config.fine_steps=2",
    "--config.joint_steps=2",
    "--config.input_hw=(32,32)",
    "--max_parallel=2",
    "--timing_iters=2",
    "--timing_batch_sizes=2",  # one compile per model and part (batch 1 and 32 on a GPU)
  ]
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
  return p.stdout + p.stderr


def _checkpoint_mtimes(workdir: Path) -> dict[str, float]:
  return {
    str(p.relative_to(workdir)): p.stat().st_mtime
    for p in sorted((workdir / "runs").glob("*/checkpoints/*"))
  }


def test_all_experiments_then_reuse(data, tmp_path):
  workdir = tmp_path / "paper"
  _run(data, workdir)

  runs = sorted(p.name for p in (workdir / "runs").iterdir())
  assert runs == sorted(
    ["pool4", "pool8", "pool16", "standard8", "nodropout8", "stddropout8", "unnormalized"]
  )
  for name, (columns, num_rows, figures) in EXPECTED.items():
    out = workdir / name
    for f in figures:
      assert (out / f).stat().st_size > 1000, f"{name}/{f}"
    md = (out / "table.md").read_text()
    assert "seeds: 0" in md and "device:" in md and "experiments.paper" in md, md
    table = json.loads((out / "table.json").read_text())
    assert table["header"]["dataset"].startswith("synthetic/tiny")
    rows = [r for r in table["rows"] if not r["name"].startswith("label noise")]
    assert len(rows) == num_rows, (name, [r["name"] for r in table["rows"]])
    for r in rows:
      for c in columns:
        v = r["values"][c]
        assert v is not None and math.isfinite(v), (name, r["name"], c, v)
  # Details that say the right runs and checkpoints were used.
  pooling = json.loads((workdir / "pooling" / "table.json").read_text())
  noise = next(r for r in pooling["rows"] if r["name"].startswith("label noise"))
  assert noise["values"]["σ Head"] == 0.0  # the tiny builder injects no label noise
  assert any("phase 1, step 4" in r["name"] for r in pooling["rows"])
  shared = {
    r["name"]: r["values"]
    for r in json.loads((workdir / "shared_features" / "table.json").read_text())["rows"]
  }
  a, b = shared.values()
  assert a["params coarse"] == b["params coarse"]
  assert abs(a["params fine"] - b["params fine"]) / a["params fine"] < 0.05
  # Every checkpoint is kept: phase boundaries 4 and 6, the end 8 (standard8: 4, 8).
  assert sorted(int(p.name) for p in (workdir / "runs" / "pool8" / "checkpoints").iterdir()) == [
    4,
    6,
    8,
  ]
  summary = (workdir / "summary.md").read_text()
  assert all(f"## {n}" in summary for n in EXPECTED)

  # Second invocation (every experiment with runs): nothing is retrained, the
  # outputs are rewritten.
  before = _checkpoint_mtimes(workdir)
  (workdir / "mpii_table" / "table.json").unlink()
  with_runs = [n for n in paper.EXPERIMENTS if n != "timing"]
  log = _run(data, workdir, ",".join(with_runs))
  assert log.count("reusing finished run") == 7, log[-3000:]
  assert "] training " not in log
  assert _checkpoint_mtimes(workdir) == before
  assert (workdir / "mpii_table" / "table.json").exists()
  assert "## timing" in (workdir / "summary.md").read_text()  # kept from the first run


def test_read_scalars_parses_tensorboardx_events(tmp_path):
  from tensorboardX import SummaryWriter

  w = SummaryWriter(str(tmp_path))
  for step, v in ((1, 3.0), (2, 2.5), (5, 1.0)):
    w.add_scalar("train/e1", v, step)
    w.add_scalar("train/loss", 10 * v, step)
  w.close()
  out = paper.read_scalars(str(tmp_path), ["train/e1", "missing"])
  np.testing.assert_array_equal(out["train/e1"][0], [1, 2, 5])
  np.testing.assert_allclose(out["train/e1"][1], [3.0, 2.5, 1.0])
  assert out["missing"][0].size == 0


def test_run_overrides_follow_the_paper():
  from heatpose_jax.configs import synthetic

  base = synthetic.get_config("tiny")
  std = paper.make_run(base, "/w", "standard8", 0, checkpoints_per_run=10).config
  assert std.model.standard_cascade and std.joint_steps == 0
  assert std.fine_steps == base.fine_steps + base.joint_steps
  run = paper.make_run(base, "/w", "nodropout8", 2, checkpoints_per_run=10)
  assert run.directory == "/w/runs/nodropout8_seed2" and run.config.seed == base.seed + 2
  assert run.config.model.dropout == "none" and run.config.model.pool_factor == 8
  # All checkpoints are kept, about checkpoints_per_run of them.
  total = paper.total_steps(run.config)
  assert run.config.checkpoint_every >= total / 10
  assert run.config.keep_checkpoints >= total // run.config.checkpoint_every + 3
  assert paper.runs_of("mpii_table", base) == ("pool8", "unnormalized")
  with pytest.raises(ValueError, match="unknown experiment"):
    paper.runs_of("nope", base)
