"""The benchmark (studies/benchmark.py) on tiny models on the CPU: the launcher's
report, the FLOP counts and the timing helpers. Speeds are smoke values, never
asserted."""

import json
import math
import os
import subprocess
import tarfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from conftest import FAST_COMPILE
from heatpose_jax import from_config
from heatpose_jax.core import sharding
from heatpose_jax.model import model_stats
from studies import benchmark, input_benchmark

REPO = Path(__file__).resolve().parents[1]


def _positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_gpu_script_smoke_run_writes_every_output(tmp_path):
  # scripts/gpu_benchmark.sh with SMOKE=1: every stage of the H100 call on tiny
  # models on the CPU (baseline, profile, input side, a variant, merge).
  out = tmp_path / "out"
  env = dict(
    os.environ,
    SMOKE="1",
    OUT=str(out),
    CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "cache")),
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}",
  )
  proc = subprocess.run(
    ["bash", "scripts/gpu_benchmark.sh"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=400,
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  # What the device returns: at most 8 plain files, names of letters, digits, '.', '_', '-'.
  files = sorted(p.name for p in out.iterdir())
  assert files == [
    "benchmark_h100.json",
    "benchmark_h100.md",
    "input.json",
    "input.md",
    "log.txt",
    "profile.json",
    "profile.md",
    "traces.tgz",
  ]
  assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in out.iterdir())
  merged = json.loads((out / "benchmark_h100.json").read_text())
  assert [r["variant"] for r in merged["variants"]] == ["baseline", "graphs"]
  assert "--xla_gpu_enable_command_buffer=" in merged["variants"][1]["xla_flags"]
  report = merged["variants"][0]
  assert not report["failed"] and not report["skipped"]
  assert report["device"]["jax"] == jax.__version__ and report["device"]["date"]
  assert report["command"].startswith(
    "python -m experiments.benchmark --tiny --model=flic --variant=baseline"
  )
  assert {p["dtype"] for p in report["peaks"].values()} == {"bfloat16", "float32"}
  assert all(_positive(p["tflops"]) for p in report["peaks"].values())
  by = {(r["section"], r["device"]): r for r in report["results"]}
  assert set(by) == {
    ("forward", "default"),
    ("latency", "default"),
    ("train", "default"),
    ("forward", "cpu"),
  }
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
  latency = by[("latency", "default")]
  assert latency["batch"] == 1 and "predictor_ms" not in latency
  for way in ("aot", "jit", "host"):
    assert _positive(latency[f"{way}_ms"]), way
    assert latency[f"{way}_p10_ms"] <= latency[f"{way}_ms"] <= latency[f"{way}_p90_ms"]
  cpu = by[("forward", "cpu")]
  assert cpu["batch"] == 1 and cpu["dtype"] == "float32" and _positive(cpu["cascade_ms_per_call"])
  assert "coarse_ms_per_image" not in cpu
  # Every variant measured its latency case; the comparison has a row for it.
  assert all(any(r["section"] == "latency" for r in v["results"]) for v in merged["variants"][1:])
  rows = {r["case"]: r["values"] for r in merged["comparison"]}
  assert set(rows["latency default b1"]) == {"baseline", "graphs"}
  assert merged["input"]["best_jpeg_img_s"] and merged["input"]["train_img_s"]["joint"] > 0
  # The merge read the input benchmark's JSON; its Markdown is rendered from the same rows.
  measured = json.loads((out / "input.json").read_text())
  assert merged["input"]["measured"] == measured and measured["rows"]
  row = measured["rows"][0]
  assert (
    f"| {row['data']} | {row['what']} | {row['img_s']:,.0f} |" in (out / "input.md").read_text()
  )
  md = (out / "benchmark_h100.md").read_text()
  assert "| latency default b1 | AOT ms |" in md and "## Input side" in md
  assert "| flic | 64x48 | 7 | 8x | joint | bfloat16 | 8 |" in md
  assert "| cpu | flic | 64x48 | 8x | float32 | 1 |" in md
  assert "jax " + jax.__version__ in md and "matrix-product peak" in md
  prof = json.loads((out / "profile.json").read_text())
  assert [t["target"] for t in prof["targets"]] == ["joint", "cascade"]
  for t in prof["targets"]:
    shares = [c["time_share"] for c in t["categories"]]
    assert None not in shares and sum(shares) == pytest.approx(1.0)
  with tarfile.open(out / "traces.tgz") as tar:
    names = tar.getnames()
  assert any(n.endswith(".xplane.pb") for n in names) and "./joint.hlo.txt" in names
  assert "skipped: none; failed: none" in proc.stdout


def test_input_side_compares_decoding_with_training():
  rows = [
    ("make_dataset, 16 threads", 1137.0),
    ("make_dataset, 8 worker processes", 2478.0),
    ("make_dataset on the cache, 2 threads", 17963.0),
    ("PIL full decode only, 1 thread", 99999.0),
  ]
  measured = {
    "jax": "x",
    "backend": "cpu",
    "cpus": 16,
    "parts": ["host"],
    "rows": [{"data": "256 JPEG", "what": w, "img_s": r} for w, r in rows],
  }
  report = {"results": [{"section": "train", "phase": "joint", "images_per_s": 1073.0}]}
  side = benchmark.input_side(measured, report)
  assert side["best_jpeg_img_s"] == {"256 JPEG": 2478.0}
  assert side["best_cache_img_s"] == {"256 JPEG": 17963.0}
  assert side["jpeg_keeps_up_with_joint"] is True
  report["results"][0]["images_per_s"] = 3000.0
  assert benchmark.input_side(measured, report)["jpeg_keeps_up_with_joint"] is False
  # The human table is rendered from the same numbers.
  assert "| 256 JPEG | make_dataset, 8 worker processes | 2,478 |" in (
    input_benchmark.format_markdown(measured)
  )


class _NoCostAnalysis:
  """A lowered module as jax returns it on the GPU: no cost analysis."""

  def cost_analysis(self):
    return None


def test_train_step_flops_xla_and_analytic_agree():
  # The train step's FLOPs are forward + backward: about 3x the forward's, and the
  # analytic count (convolutions and matrix products of the jaxpr) matches XLA's.
  config = benchmark.model_config("mpii", pool=8, dtype="float32", batch_size=8, tiny=True)
  mesh = sharding.make_mesh(jax.devices()[:1])
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
  mesh = sharding.make_mesh(jax.devices()[:1])
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


def test_cpu_latency_report_times_the_predictor(tmp_path):
  report = benchmark.cpu_latency_report(
    ["flic"], tiny=True, iters=1, warmup=0, command="test", output_dir=str(tmp_path)
  )
  (r,) = report["results"]
  assert r["model"] == "flic" and r["batch"] == 1 and r["dtype"] == "float32"
  for way in ("predictor", "aot", "jit", "host"):
    assert _positive(r[f"{way}_ms"]), way
  assert _positive(r["predictor_first_call_s"]) and report["nproc"] >= 1
  saved = json.loads((tmp_path / "cpu_latency.json").read_text())
  assert saved["results"][0]["aot_ms"] == r["aot_ms"]
  md = (tmp_path / "cpu_latency.md").read_text()
  assert "| flic | 64x48 | 7 | 8x |" in md and "nproc" in md
