"""The benchmark on tiny models on the CPU: the library's timers and the launcher's
table and JSON (numbers are smoke values, not performance)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heatpose_jax import benchmark, train

REPO = Path(__file__).resolve().parents[1]


def _positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_forward_ms():
  config = benchmark.model_config("flic", pool=16, tiny=True)
  model = train.build_model(config)
  hw = tuple(config.input_hw)
  params = benchmark.random_params(model, hw)
  # The cascade part runs in test_cli_tiny (the same lower/compile/time path).
  assert _positive(benchmark.forward_ms(model, params, hw, 1, part="coarse", iters=2, warmup=1))
  with pytest.raises(ValueError, match="part"):
    benchmark.forward_ms(model, params, hw, 1, part="fine")


def test_default_cases_order():
  cases = benchmark.default_cases(pools=(8, 4), forward_batches=(1, 32))
  first = cases[0]
  assert (first["section"], first["model"], first["phase"], first["dtype"]) == (
    "train",
    "mpii",
    "coarse",
    "bfloat16",
  )
  # Then Table 2 in float32, then the f32 training baseline.
  assert [c["section"] for c in cases[1:5]] == ["forward"] * 4
  assert all(c["dtype"] == "float32" for c in cases[1:5])
  assert cases[5]["section"] == "train" and cases[5]["dtype"] == "float32"
  assert len(cases) == 8 + 2 * 2 * 2
  assert len({json.dumps(c, sort_keys=True) for c in cases}) == len(cases)


def test_cli_tiny(tmp_path):
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # One device compiles faster.
  args = [
    sys.executable,
    "-m",
    "experiments.benchmark",
    "--tiny",
    "--train_models=mpii",
    "--phases=coarse",
    "--train_dtypes=float32",
    "--train_batch=2",
    "--pools=16",
    "--forward_dtypes=float32",
    "--forward_batches=2",
    "--max_seconds=600",
    f"--output_dir={tmp_path}",
  ]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark.json").read_text())
  assert not report["failed"] and not report["skipped"]
  (tr,) = [r for r in report["results"] if r["section"] == "train"]
  (fw,) = [r for r in report["results"] if r["section"] == "forward"]
  for key in ("images_per_s", "step_ms", "gflop_per_image", "tflops", "loss"):
    assert _positive(tr[key]), (key, tr[key])
  for key in ("coarse_ms_per_image", "cascade_ms_per_image", "coarse_gflop_per_image"):
    assert _positive(fw[key]), (key, fw[key])
  assert fw["fine_gflop_per_image"] > 0
  md = (tmp_path / "benchmark.md").read_text()
  assert "| mpii | 64x64 | 16 | 8x | coarse | float32 | 2 |" in md
  assert "| flic | 64x48 | 16x | float32 | 2 |" in md
  assert "## Training throughput" in proc.stdout and "## Forward time" in proc.stdout
