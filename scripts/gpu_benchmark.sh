#!/usr/bin/env bash
# The H100 session's one device call (issue "Faster than PyTorch on the H100"):
# the issue's table, the profile breakdown of the train steps, the input side on
# the 16-core host, and candidate speed-ups that do not change the model's
# function, compared in one JSON. See docs/performance.md.
#
#   bash scripts/gpu_benchmark.sh --fetch-wheels   # HERE, first: .whl/ for the image's Python 3.12
#   device run: command `bash scripts/gpu_benchmark.sh`, carry [".whl"], timeout_s 600
#   SMOKE=1 bash scripts/gpu_benchmark.sh          # every stage on the CPU, tiny (tests)
#
# Stages, each under `timeout` and within BUDGET_S (default 520 s) in all:
#   baseline  experiments.benchmark: forward batch 32, AOT latency batch 1, coarse
#             and joint train steps at batch 64 (cold compiles into an empty cache);
#   profile   experiments.profile: coarse and joint train steps, cascade batch 1
#             (compiled programs come from the baseline's cache), while the input
#             benchmark (host only, JAX on the CPU) runs beside it;
#   variants  one process each (XLA flags are read at start), in priority order
#             while time is left: CUDA graphs for everything, batch 128, autotune
#             level 0, no command buffers, the latency-hiding scheduler, joint at 128;
#   merge     one report comparing baseline and variants, with the input side.
# Before/after a change: run this same script at both commits and compare the
# two benchmark_h100.md and profile.md.
#
# $OUT receives (the device returns at most 8 files, 16 MiB each):
#   benchmark_h100.json, benchmark_h100.md   baseline + variants (merged)
#   profile.json, profile.md                 per-category FLOPs, bytes, time
#   input.json, input.md                     host pipeline img/s (the merge reads the JSON)
#   traces.tgz                               traces and optimized HLO (for --reanalyze)
#   log.txt                                  everything printed
#
# Environment: OUT (default ./gpu_out), BUDGET_S, PYTHON, CACHE_DIR (compilation
# cache; default a fresh one), VARIANTS (names to run, or 'all': the default,
# but 'graphs' with SMOKE), SMOKE=1 (tiny models on the CPU; each variant then
# runs its flags with the latency case only).
set -uo pipefail
cd "$(dirname "$0")/.."

# Pinned as in requirements.lock: what the GPU image lacks of the project's imports.
WHEELS="ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || grep -qxF "/.whl/" .gitignore ||
    echo "/.whl/" >>.git/info/exclude
  py=${PYTHON:-.venv/bin/python}
  # shellcheck disable=SC2086
  exec "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
fi

SMOKE=${SMOKE:-0}
BUDGET_S=${BUDGET_S:-520}
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
OUT=${OUT:-$PWD/gpu_out}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_benchmark.XXXXXX")
CACHE=${CACHE_DIR:-$WORK/jaxcache}
RESERVE_S=25 # kept for the merge and the archive
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
elif [[ "$SMOKE" == 1 && -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
if [[ "$SMOKE" != 1 ]] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

if [[ "$SMOKE" == 1 ]]; then
  export JAX_PLATFORMS=cpu
  TINY=(--tiny --model=flic) # the FLIC bank: half the convs to compile
  BASE=(--phases=joint --forward_batches=2 --latency_batches=1 --cpu)
  PROFILE=(--targets=joint,cascade)
  INPUT=(--num_examples=8 --num_images=16 --batch_size=8 --threads=1 --workers=)
else
  TINY=()
  BASE=(--phases=coarse,joint --forward_batches=32 --forward_parts=cascade --latency_batches=1 --nocpu)
  PROFILE=(--targets=coarse,joint,cascade --steps=3)
  INPUT=(--threads=4,16 --workers=8,14 --num_images=1536)
fi

remaining() { echo $((DEADLINE - $(date +%s))); }
FAILED=()
SKIPPED=()

# run_stage NAME SECONDS CMD...: CMD under `timeout`, at most SECONDS or what the
# budget has left (less the reserve); exit status 3 (items skipped) counts as done.
run_stage() {
  local name=$1 want=$2
  shift 2
  local left=$(($(remaining) - RESERVE_S))
  local limit=$((want < left ? want : left))
  if ((limit < 20)); then
    echo "== $name: skipped, ${left} s left"
    SKIPPED+=("$name")
    return 0
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
  [[ $rc == 0 || $rc == 3 ]] || FAILED+=("$name:$rc")
}

echo "== $(date -u +%FT%TZ) gpu_benchmark.sh, SMOKE=$SMOKE, budget ${BUDGET_S} s, work $WORK"
git log -1 --format='== commit %H %s' 2>/dev/null || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader

# 1. The issue's table rows (cold compiles: the cache is empty).
run_stage baseline 320 "$PY" -m experiments.benchmark "${TINY[@]}" --variant=baseline "${BASE[@]}" \
  --compilation_cache_dir="$CACHE" --output_dir="$WORK/baseline" --max_seconds=300

# 2. The profile breakdown; the input benchmark beside it (host only; kernel
# times in the trace do not depend on the host's load): input.json (the numbers,
# for the merge) and input.md from one measurement.
JAX_PLATFORMS=cpu timeout $(($(remaining) - RESERVE_S)) "$PY" -m experiments.benchmark_input \
  --parts=host "${INPUT[@]}" --output_dir="$OUT" >/dev/null 2>"$WORK/input.err" &
INPUT_PID=$!
run_stage profile 150 "$PY" -m experiments.profile "${TINY[@]}" "${PROFILE[@]}" \
  --compilation_cache_dir="$CACHE" --output_dir="$WORK/profile"
wait "$INPUT_PID" || FAILED+=("input:$?")
cat "$WORK/input.err" >&2
cat "$OUT/input.md" 2>/dev/null
cp "$WORK"/profile/profile.{json,md} "$OUT"/ 2>/dev/null || FAILED+=("profile-files")

# 3. Candidate speed-ups: NAME|XLA_FLAGS|benchmark arguments, most telling first.
LAT=(--forward_batches= --latency_batches=1 --phases= --nocpu)
ALL_VARIANTS=(
  "graphs|--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1|${LAT[*]}"
  "batch128||--forward_batches= --latency_batches= --phases=coarse --nocpu --train_batch=128"
  "autotune0|--xla_gpu_autotune_level=0|--forward_batches= --latency_batches= --phases=joint --nocpu"
  "nographs|--xla_gpu_enable_command_buffer=|--forward_batches= --latency_batches=1 --phases=coarse --nocpu"
  "lhs|--xla_gpu_enable_latency_hiding_scheduler=true|--forward_batches= --latency_batches= --phases=coarse --nocpu"
  "batch128_joint||--forward_batches= --latency_batches= --phases=joint --nocpu --train_batch=128"
)
# The smoke run takes one by default (VARIANTS=all: each one's XLA flags are
# then parsed by this jaxlib too: a misspelt flag stops XLA at start).
VARIANTS=${VARIANTS:-$([[ "$SMOKE" == 1 ]] && echo graphs || echo all)}
MERGE="$WORK/baseline"
for spec in "${ALL_VARIANTS[@]}"; do
  IFS='|' read -r name xla args <<<"$spec"
  if [[ "$VARIANTS" != all && " $VARIANTS " != *" $name "* ]]; then
    continue
  fi
  [[ "$SMOKE" == 1 ]] && args="${LAT[*]}" # the smoke run checks each variant's flags and path
  read -r -a argv <<<"$args"
  left=$(($(remaining) - RESERVE_S))
  XLA_FLAGS="${XLA_FLAGS:-}${xla:+ $xla}" run_stage "variant $name" 150 "$PY" -m experiments.benchmark \
    "${TINY[@]}" --variant="$name" "${argv[@]}" --compilation_cache_dir="$CACHE" \
    --output_dir="$WORK/v_$name" --max_seconds=$((left < 150 ? left - 15 : 135))
  MERGE="$MERGE,$WORK/v_$name"
done

# 4. One report of everything.
echo "== merge"
timeout 60 "$PY" -m experiments.benchmark --merge="$MERGE" --input_json="$OUT/input.json" \
  --output_dir="$OUT" --output_name=benchmark_h100 || FAILED+=("merge:$?")
# Everything `python -m experiments.profile --reanalyze=DIR` needs, here, without the device.
(cd "$WORK/profile" 2>/dev/null && tar czf "$OUT/traces.tgz" .) || FAILED+=("traces")
if [[ -f "$OUT/traces.tgz" && $(stat -c %s "$OUT/traces.tgz") -gt 15000000 ]]; then
  (cd "$WORK/profile" && tar czf "$OUT/traces.tgz" --exclude='*.trace.json.gz' .)
fi

echo "== done in $(($(date +%s) - START)) s; skipped: ${SKIPPED[*]:-none}; failed: ${FAILED[*]:-none}"
ls -la "$OUT"
[[ ${#FAILED[@]} == 0 ]]
