r"""The performance table: training steps, forward latency and throughput, FLOPs,
% of the matrix-product peak and memory of the MPII model (256×256, 8×, 16
joints, bf16), the AOT batch-1 latency, and the batch-1 cascade on the CPU cores
(see studies/benchmark.py).

  python -m experiments.benchmark --output_dir=/tmp/bench          # the H100 table
  python -m experiments.benchmark --tiny --output_dir=/tmp/bench   # CPU smoke run
  XLA_FLAGS=... python -m experiments.benchmark --variant=NAME ... # a candidate speed-up
  python -m experiments.benchmark --merge=DIR1,DIR2 --input_json=I --output_dir=D  # compare
  JAX_PLATFORMS=cpu python -m experiments.benchmark --cpu_latency=mpii,flic --output_dir=D
  JAX_PLATFORMS=cpu python -m experiments.benchmark --cpu_latency=mpii --cpu_batches=1,8 \
      --torch_python=../torch-venv/bin/python --output_dir=D   # beside the PyTorch peer

Writes OUTPUT_DIR/OUTPUT_NAME.json and .md after every case (default name
'benchmark'); --merge writes one report comparing the runs' benchmark.json
(the first is the baseline; with --input_json, the input benchmark's input.json
beside the training rates), --cpu_latency writes cpu_latency.{json,md}.
Compile times are cold: the persistent compilation cache is off unless
--compilation_cache_dir is given (the first compile into an empty cache is cold too).
"""

import json
import os

from absl import flags

from experiments import launch
from heatpose_jax.core import fileio
from studies import benchmark

_MODEL = launch.define_model_flags("CPU-sized model, batches and iterations (tests).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Writes benchmark.json and benchmark.md.")
_PHASES = flags.DEFINE_list("phases", ["coarse", "joint"], "Train steps to time.")
_FORWARD_BATCHES = flags.DEFINE_list(
  "forward_batches", ["1", "32"], "Forward batch sizes (tiny: 1,4)."
)
_CPU = flags.DEFINE_bool("cpu", True, "Also the batch-1 cascade (float32) on the CPU cores.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 540, "A case starts only if it still fits.")
_MATMUL = flags.DEFINE_integer("matmul_size", 8192, "Side of the peak's matrices (tiny: 256).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Steps per timed window (tiny: 1).")
_TRAIN_REPEATS = flags.DEFINE_integer("train_repeats", 3, "Timed windows, median (tiny: 1).")
_FORWARD_ITERS = flags.DEFINE_integer("forward_iters", 20, "Timed call pairs, median (tiny: 2).")
_FORWARD_PARTS = flags.DEFINE_list(
  "forward_parts", ["coarse", "cascade"], "Forward parts timed (interleaved); fine needs both."
)
_LATENCY_BATCHES = flags.DEFINE_list(
  "latency_batches", ["1"], "AOT latency cases (uint8 canvas to joints); empty for none."
)
_LATENCY_ITERS = flags.DEFINE_integer("latency_iters", 50, "Timed latency rounds (tiny: 2).")
_VARIANT = flags.DEFINE_string(
  "variant", "", "Name of this run's settings (XLA_FLAGS, batch), recorded in the report."
)
_OUTPUT_NAME = flags.DEFINE_string("output_name", "benchmark", "Report file name, no extension.")
_MERGE = flags.DEFINE_list(
  "merge", [], "Measure nothing: merge these runs (directories or .json files), first = baseline."
)
_INPUT_JSON = flags.DEFINE_string(
  "input_json", "", "With --merge: the input benchmark's input.json to compare against."
)
_CPU_LATENCY = flags.DEFINE_list(
  "cpu_latency", [], "Measure only the batch-1 float32 cascade latency of these models on the CPU."
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first (tiny: 1).")
_CPU_BATCHES = flags.DEFINE_list("cpu_batches", ["1"], "With --cpu_latency: the batch sizes.")
_TORCH_PYTHON = flags.DEFINE_string(
  "torch_python",
  "",
  "With --cpu_latency: the Python of a virtual environment with PyTorch; runs the "
  "PyTorch peer of the same network right after each model (never a dependency).",
)
_TORCH_PEER = flags.DEFINE_string(
  "torch_peer", os.path.normpath(benchmark.TORCH_PEER), "The peer's latency script."
)
_TORCH_MODES = flags.DEFINE_list(
  "torch_modes", list(benchmark.TORCH_MODES), "The peer's modes (eager, compile, *_cl)."
)
# Compile times are part of the table: measure them cold unless asked otherwise.
flags.FLAGS.set_default("compilation_cache_dir", "")


def _merge() -> None:
  measured = None
  if _INPUT_JSON.value and os.path.exists(_INPUT_JSON.value):  # absent: the input stage failed
    with open(_INPUT_JSON.value) as f:
      measured = json.load(f)
  reports = benchmark.load_reports(_MERGE.value)
  merged = benchmark.merge_reports(reports, input_measured=measured, command=_command())
  text = benchmark.format_merged_markdown(merged)
  if _OUTPUT_DIR.value:
    fileio.write_json(os.path.join(_OUTPUT_DIR.value, f"{_OUTPUT_NAME.value}.json"), merged)
    fileio.write_text(os.path.join(_OUTPUT_DIR.value, f"{_OUTPUT_NAME.value}.md"), text)
  print(text, flush=True)


def _command() -> str:
  return launch.command_line("experiments.benchmark")


def main(argv):
  del argv
  launch.setup()
  if _MERGE.value:
    _merge()
    return
  if _CPU_LATENCY.value:
    benchmark.cpu_latency_report(
      _CPU_LATENCY.value,
      pool=_MODEL.pool.value,
      iters=launch.tiny_default(_LATENCY_ITERS, 2),
      warmup=launch.tiny_default(_WARMUP, 1),
      batches=[int(b) for b in _CPU_BATCHES.value],
      tiny=_MODEL.tiny.value,
      command=_command(),
      output_dir=_OUTPUT_DIR.value,
      torch_python=_TORCH_PYTHON.value,
      torch_peer=_TORCH_PEER.value,
      torch_modes=_TORCH_MODES.value,
      output_name=_OUTPUT_NAME.value if flags.FLAGS["output_name"].present else "cpu_latency",
    )
    return
  config = _MODEL.config()
  cases = benchmark.default_cases(
    forward_batches=[int(b) for b in launch.tiny_default(_FORWARD_BATCHES, ["1", "4"])],
    phases=_PHASES.value,
    cpu=_CPU.value,
    latency_batches=[int(b) for b in _LATENCY_BATCHES.value],
  )
  report = benchmark.run_benchmark(
    config,
    cases,
    output_dir=_OUTPUT_DIR.value,
    command=_command(),
    max_seconds=_MAX_SECONDS.value,
    matmul_size=launch.tiny_default(_MATMUL, 256),
    train_steps=launch.tiny_default(_TRAIN_STEPS, 1),
    train_repeats=launch.tiny_default(_TRAIN_REPEATS, 1),
    forward_iters=launch.tiny_default(_FORWARD_ITERS, 2),
    latency_iters=launch.tiny_default(_LATENCY_ITERS, 2),
    warmup=launch.tiny_default(_WARMUP, 1),
    forward_parts=_FORWARD_PARTS.value,
    variant=_VARIANT.value,
    output_name=_OUTPUT_NAME.value,
  )
  print("\n" + benchmark.format_markdown(report), flush=True)
  if report["failed"]:
    raise ValueError(f"{len(report['failed'])} case(s) failed (see above)")
  if report["skipped"]:
    raise launch.Skipped(f"{len(report['skipped'])} case(s) skipped")


if __name__ == "__main__":
  launch.run(main)
