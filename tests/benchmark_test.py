"""The benchmark (studies/benchmark.py) on tiny models on the CPU: the launcher's
report, the FLOP counts and the timing helpers. Speeds are smoke values, never
asserted."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from heatpose_jax import from_config, input_pipeline, model_stats
from studies import benchmark

REPO = Path(__file__).resolve().parents[1]


def _positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_cli_tiny_writes_every_column(tmp_path):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHONUNBUFFERED="1",
    XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_use_fusion_emitters=false",
  )
  args = [
    sys.executable,
    "-m",
    "experiments.benchmark",
    "--tiny",
    "--phases=joint",
    "--forward_batches=2",
    f"--output_dir={tmp_path}",
  ]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark.json").read_text())
  assert not report["failed"] and not report["skipped"]
  assert report["device"]["jax"] == jax.__version__ and report["device"]["date"]
  assert report["command"].startswith("python -m experiments.benchmark --tiny")
  assert {p["dtype"] for p in report["peaks"].values()} == {"bfloat16", "float32"}
  assert all(_positive(p["tflops"]) for p in report["peaks"].values())
  by = {(r["section"], r["device"]): r for r in report["results"]}
  assert set(by) == {("forward", "default"), ("train", "default"), ("forward", "cpu")}
  train = by[("train", "default")]
  assert train["phase"] == "joint" and train["batch"] == 8 and train["dtype"] == "bfloat16"
  for key in ("step_ms", "images_per_s", "gflop_per_image", "tflops", "peak_percent"):
    assert _positive(train[key]), (key, train[key])
  assert train["flop_source"] == "xla" and _positive(train["compile_s"])
  assert _positive(train["argument_gib"]) and math.isfinite(train["loss"])
  forward = by[("forward", "default")]
  for part in ("coarse", "cascade"):
    for key in ("ms_per_image", "gflop_per_image", "tflops", "compile_s"):
      assert _positive(forward[f"{part}_{key}"]), (part, key)
  assert forward["fine_ms_per_image"] >= 0 and forward["fine_gflop_per_image"] > 0
  cpu = by[("forward", "cpu")]
  assert cpu["batch"] == 1 and cpu["dtype"] == "float32" and _positive(cpu["cascade_ms_per_call"])
  assert "coarse_ms_per_image" not in cpu
  md = (tmp_path / "benchmark.md").read_text()
  assert "| mpii | 64x64 | 16 | 8x | joint | bfloat16 | 8 |" in md
  assert "| cpu | mpii | 64x64 | 8x | float32 | 1 |" in md
  assert "jax " + jax.__version__ in md and "matrix-product peak" in md
  assert "## Training step" in proc.stdout and "## Forward" in proc.stdout


class _NoCostAnalysis:
  """A lowered module as jax returns it on the GPU: no cost analysis."""

  def cost_analysis(self):
    return None


def test_train_step_flops_xla_and_analytic_agree():
  # The train step's FLOPs are forward + backward: about 3x the forward's, and the
  # analytic count (convolutions and matrix products of the jaxpr) matches XLA's.
  config = benchmark.model_config("mpii", pool=8, dtype="float32", batch_size=8, tiny=True)
  mesh = input_pipeline.make_mesh(jax.devices()[:1])
  state = from_config.abstract_state(config, mesh)
  batch = benchmark.synthetic_batch(8, tuple(config.input_hw), 16)
  batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  key = jax.eval_shape(lambda: jax.random.key(0))
  traced = from_config.train_step(config, "coarse", mesh).trace(state, batch, key)
  xla, source = model_stats.flops(traced)
  analytic = model_stats.jaxpr_flops(traced.jaxpr)
  assert source == "xla" and abs(analytic / xla - 1) < 0.05, (xla, analytic)
  # A backend without an analysis of lowered modules (the GPU's plugin): the analytic count.
  assert model_stats.flops(traced, _NoCostAnalysis()) == (analytic, "analytic")
  model = from_config.model(config)
  x = jax.ShapeDtypeStruct((8, *config.input_hw, 3), jnp.uint8)
  forward = model_stats.flops(
    jax.jit(
      lambda p, x: model.apply({"params": p}, x, train=False, method="coarse_heatmaps")
    ).trace(state.params, x)
  )[0]
  assert 2.5 < xla / forward < 3.5, (xla, forward)


def test_fine_time_is_never_negative():
  # The "cascade" here is faster than the "coarse" part: a difference of medians
  # would be negative, the per-pair difference is clipped at 0.
  first, second = benchmark.interleaved_times(
    [lambda r: time.sleep(0.003), lambda r: time.sleep(0.001)], iters=5, warmup=1
  )
  stats = benchmark.pair_stats(first, second)
  assert stats["second_s"] < stats["first_s"] and stats["difference_s"] == 0.0
  first, second = benchmark.interleaved_times(
    [lambda r: time.sleep(0.001), lambda r: time.sleep(0.010)], iters=5, warmup=0
  )
  assert benchmark.pair_stats(first, second)["difference_s"] >= 0.005


def test_random_state_fills_the_abstract_state_without_compiling_init():
  config = benchmark.model_config("flic", pool=16, dtype="float32", batch_size=8, tiny=True)
  mesh = input_pipeline.make_mesh(jax.devices()[:1])
  abstract = from_config.abstract_state(config, mesh)
  state = benchmark.random_state(abstract)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == jax.tree.map(
    lambda a: (a.shape, a.dtype), abstract
  )
  kernel = state.params["coarse"]["out"]["kernel"]
  assert (
    float(jnp.std(kernel)) > 0
    and kernel.sharding == abstract.params["coarse"]["out"]["kernel"].sharding
  )
  with pytest.raises(ValueError, match="model must be"):
    benchmark.model_config("lsp", pool=8, dtype="float32")
