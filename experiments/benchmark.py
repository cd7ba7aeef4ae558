r"""Device benchmark: training images/s and forward ms per image of the paper's models.

Sections (--cases):
  train    images/s of the real jitted `train_step` (augmentation, targets,
           forward, backward, AdamW; random batches already on the device) of
           the MPII (256×256, 16 joints) and FLIC (320×240, 7 joints) models at
           8× pooling, coarse and joint phases, bf16 and f32, with GFLOP/step
           and achieved TFLOP/s;
  forward  ms per image of the FLIC coarse model and cascade at 4×/8×/16×
           pooling, batch 1 and 32 (the paper's Table 2; fine = cascade − coarse).

Cases run most important first (MPII coarse bf16 training, then Table 2 in f32)
within --max_seconds; after the first, they are compiled --compile_workers at a
time in parallel threads, then timed one by one with nothing else running.
Results print as they come, and --output_dir gets benchmark.json and
benchmark.md after every case.

  python -m experiments.benchmark --output_dir=/tmp/bench            # GPU
  python -m experiments.benchmark --tiny --max_seconds=60            # CPU smoke test
"""

from __future__ import annotations

import os
import sys
import time

import jax
from absl import app, flags

from heatpose_jax import benchmark, evaluation

_CASES = flags.DEFINE_list("cases", ["train", "forward"], "Sections to run: train, forward.")
_TINY = flags.DEFINE_bool("tiny", False, "CPU-sized models, batches and iterations (tests).")
_MAX_SECONDS = flags.DEFINE_float(
  "max_seconds", 200.0, "Budget: a case that would not fit in the time left is skipped."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Writes benchmark.json and benchmark.md.")
_TRAIN_MODELS = flags.DEFINE_list("train_models", ["mpii", "flic"], "Models to train: mpii, flic.")
_PHASES = flags.DEFINE_list("phases", ["coarse", "joint"], "Training phases: coarse, fine, joint.")
_TRAIN_DTYPES = flags.DEFINE_list(
  "train_dtypes", ["bfloat16", "float32"], "Compute dtypes of the training cases."
)
_TRAIN_POOL = flags.DEFINE_integer("train_pool", 8, "Pooling factor of the training cases.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 64, "Global training batch (tiny: 8).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Steps per timed window (tiny: 1).")
_TRAIN_REPEATS = flags.DEFINE_integer("train_repeats", 3, "Timed windows, median (tiny: 1).")
_FORWARD_MODEL = flags.DEFINE_string("forward_model", "flic", "Model of the forward cases.")
_POOLS = flags.DEFINE_list("pools", ["8", "4", "16"], "Pooling factors of the forward cases.")
_FORWARD_DTYPES = flags.DEFINE_list(
  "forward_dtypes", ["float32", "bfloat16"], "Compute dtypes of the forward cases."
)
_FORWARD_BATCHES = flags.DEFINE_list(
  "forward_batches", ["1", "32"], "Batch sizes of the forward cases (tiny: 1,4)."
)
_FORWARD_ITERS = flags.DEFINE_integer("forward_iters", 20, "Timed calls, median (tiny: 2).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls before each timing (tiny: 1).")
_COMPILE_WORKERS = flags.DEFINE_integer(
  "compile_workers",
  6,
  "Cases compiled at once (in waves; timing never overlaps compilation; the first case "
  "always runs alone). 1: strictly one case after the other (tiny: 2).",
)


def _value(flag, tiny_value):
  """The flag's value, or `tiny_value` under --tiny when the flag was not given."""
  return tiny_value if _TINY.value and not flags.FLAGS[flag.name].present else flag.value


def main(argv):
  del argv
  start = time.perf_counter()
  tiny = _TINY.value
  cases = benchmark.default_cases(
    sections=_CASES.value,
    train_models=_TRAIN_MODELS.value,
    phases=_PHASES.value,
    train_dtypes=_TRAIN_DTYPES.value,
    train_pool=_TRAIN_POOL.value,
    train_batch=_value(_TRAIN_BATCH, max(8, jax.device_count())),
    forward_model=_FORWARD_MODEL.value,
    pools=[int(p) for p in _POOLS.value],
    forward_dtypes=_FORWARD_DTYPES.value,
    forward_batches=[int(b) for b in _value(_FORWARD_BATCHES, ["1", "4"])],
  )
  report = {
    "device": benchmark.device_info(),
    "command": "python -m experiments.benchmark " + " ".join(sys.argv[1:]),
    "tiny": tiny,
    "max_seconds": _MAX_SECONDS.value,
    "cases": cases,
    "results": [],
    "skipped": [],
    "failed": [],
  }
  info = report["device"]
  print(
    f"device {info['device_kind']} x{info['num_devices']} ({info['platform']}), "
    f"jax {info['jax']}, flax {info['flax']}; {len(cases)} cases, budget {_MAX_SECONDS.value:.0f} s",
    flush=True,
  )
  out = _OUTPUT_DIR.value
  if out:
    os.makedirs(out, exist_ok=True)

  def write():
    report["elapsed_s"] = time.perf_counter() - start
    if out:
      evaluation.write_json_atomic(report, os.path.join(out, "benchmark.json"))
      with open(os.path.join(out, "benchmark.md"), "w") as f:
        f.write(benchmark.format_markdown(report))

  def on_result(entry):
    report[entry["status"]].append(entry)
    print(f"[{time.perf_counter() - start:6.1f} s] {benchmark.case_line(entry)}", flush=True)
    write()

  benchmark.run_cases(
    cases,
    tiny=tiny,
    max_seconds=_MAX_SECONDS.value - (time.perf_counter() - start),
    compile_workers=_value(_COMPILE_WORKERS, 2),
    train_steps=_value(_TRAIN_STEPS, 1),
    train_repeats=_value(_TRAIN_REPEATS, 1),
    forward_iters=_value(_FORWARD_ITERS, 2),
    warmup=_value(_WARMUP, 1),
    on_result=on_result,
  )
  write()
  print("\n" + benchmark.format_markdown(report), flush=True)


if __name__ == "__main__":
  app.run(main)
