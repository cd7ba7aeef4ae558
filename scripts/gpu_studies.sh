#!/usr/bin/env bash
# The precision and regularization studies on one H100, one piece per device call
# (issue "The paper's claims, measured right", parts 5 and 6; docs/precision.md).
#
#   bash scripts/gpu_studies.sh --fetch-wheels        # HERE, once: .whl/ (the image's Python 3.12)
#   device run: command `bash scripts/gpu_studies.sh p8`, carry [".whl"], timeout_s 600
#   then HERE:  tar xzf <files_at>/gpu_studies_p8.tgz  # docs/results/, docs/figures/; commit
#   SMOKE=1 bash scripts/gpu_studies.sh p8            # the same piece, tiny, on the CPU (checks)
#
# Pieces, in priority order (each fits one call; every piece also rewrites the
# merged precision.{json,md} / regularization.{json,md} and figures from all the
# records already committed under docs/results/*_records/, so commit each piece's
# files before the next call):
#   p8    precision, 8x, clean labels, seeds 0,1,2   (the headline: σ ratio, PCK gain)
#   p8n   precision, 8x, label noise,  seeds 0,1,2
#   r1    regularization: spatial_dropout, no_dropout,             seeds 0,1,2
#   r2    regularization: standard_dropout, standard_cascade,      seeds 0,1,2
#   p16   precision, 16x, clean        p16n  precision, 16x, noise   (seeds 0,1,2)
#   p4a   precision, 4x, clean, seeds 0,1    p4b  4x, noise, seeds 0,1
#   p4c   precision, 4x, clean and noise, seed 2
#   report  both studies --notrain: the merged outputs from the committed records
#           (no GPU needed; renders the 500 eval images once to measure the torso)
#
# How the pieces were sized (planning figure: the paper-size MPII model trains its
# coarse phase at ~1,800 img/s in bf16 on one H100, batch 64, its train step
# compiling in 44 s: docs/results/0e753d6/benchmark_h100.md):
#   * per image, the fine phase costs ~1.25x and the joint phase ~1.9x a coarse step
#     (train-step GFLOP: coarse 116, joint 222; fine = coarse forward 39 + fine
#     forward/backward ~105); with the paper's 8:3:3 phase split a cascade step
#     costs ~1.25 coarse steps: batch 32 -> 32 x 1.25 / 1800 = 22 ms at 8x and 16x
#     (the 16x coarse model costs what 8x does), ~40 ms at 4x (2.2x the coarse FLOPs);
#   * a call may run 600 s: BUDGET_S = 570, of which the last 60 s are kept for a
#     report pass and the archive; before the study, wheels 15 s and rendering the
#     4000 + 500 images at 256x256 40 s; in the study, fixed costs ~255 s: imports and
#     canvas cache 25 s, compiling coarse 45 s + fine and joint ~100 s (the runs
#     reach each phase together, the GPU waits) + the evaluator 30 s, measuring two
#     checkpoints per run on 500 images ~45 s, the report 10 s; ~195 s remain for
#     training (the fixed costs dominate: a piece trains as many runs as it can);
#   * precision: 3 runs x 2,400 steps (1,371 / 514 / 514) x 22 ms = 158 s at 8x/16x
#     (200 s if three runs at batch 32 use the GPU at 80 % of the batch-64 rate);
#     4x: 2 runs x 2,400 x 40 ms = 192 s (240 s), hence three 4x pieces of two runs,
#     the tightest: cut short, the same call on the warm machine finishes them;
#   * regularization: 6 runs at once (no second wave of compiles) x 1,350 steps
#     (771 / 289 / 289) x 22 ms = 178 s (223 s at 80 %); 300 training images at
#     batch 32 are 144 epochs, 12 evaluations per run;
#   * runs share the GPU (--max_parallel: 3 for precision, 6 for regularization;
#     0.9 / max_parallel of its memory each: a batch-32 run needs ~3-6 GiB).
# Every piece of one study must use the same steps (records are merged only when
# their configs match). If p8's logged img/s (printed at the end) is far below the
# plan, lower PRECISION_STEPS / REGULARIZATION_STEPS and redo p8 before the rest;
# if p8 finishes with time to spare, raise them (more steps, nearer convergence).
#
# Resuming: runs live under the ignored .gpu/studies/; a call cut short (SIGTERM
# checkpoints the runs) is resumed by the same call on the still-warm machine.
# A fresh machine starts over (checkpoints are too big to bring back), but the
# records of finished runs come back in the archive and are never retrained.
#
# $OUT receives: gpu_studies_<piece>.tgz (docs/results/{precision,regularization}*
# with the records, docs/figures/{precision,regularization}_*), precision.md and/or
# regularization.md, log.txt (everything printed, each run's img/s and log tail).
#
# Environment: OUT (default ./gpu_out), BUDGET_S (default 570), PYTHON,
# PRECISION_STEPS (2400), REGULARIZATION_STEPS (1350), NUM_TRAIN (300),
# SMOKE=1 (tiny models on the CPU, outputs in a temporary folder, not docs/).
set -uo pipefail
cd "$(dirname "$0")/.."

# Pinned as in requirements.lock: what the GPU image lacks of the studies' imports
# (promise has no wheel on PyPI: built here from its source, pure Python).
WHEELS="ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring_parser==0.18.0
  termcolor==3.3.0 toml==0.10.2 tensorboardX==2.6.5"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || grep -qxF "/.whl/" .gitignore ||
    echo "/.whl/" >>.git/info/exclude
  py=${PYTHON:-.venv/bin/python}
  # shellcheck disable=SC2086
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
  exec "$py" -m pip wheel -q --no-deps -w .whl promise==2.3
fi

PIECE=${1:?usage: gpu_studies.sh --fetch-wheels | p8|p8n|p16|p16n|p4a|p4b|p4c|r1|r2|report}
SMOKE=${SMOKE:-0}
BUDGET_S=${BUDGET_S:-570}
RESERVE_S=60 # kept for the report pass and the archive
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

case $PIECE in
  p8) STUDY=precision SEL=(--pools=8 --groups=clean --seeds=0,1,2) ;;
  p8n) STUDY=precision SEL=(--pools=8 --groups=noise --seeds=0,1,2) ;;
  p16) STUDY=precision SEL=(--pools=16 --groups=clean --seeds=0,1,2) ;;
  p16n) STUDY=precision SEL=(--pools=16 --groups=noise --seeds=0,1,2) ;;
  p4a) STUDY=precision SEL=(--pools=4 --groups=clean --seeds=0,1) ;;
  p4b) STUDY=precision SEL=(--pools=4 --groups=noise --seeds=0,1) ;;
  p4c) STUDY=precision SEL=(--pools=4 --groups=clean,noise --seeds=2) ;;
  r1) STUDY=regularization SEL=(--groups=spatial_dropout,no_dropout --seeds=0,1,2) ;;
  r2) STUDY=regularization SEL=(--groups=standard_dropout,standard_cascade --seeds=0,1,2) ;;
  report) STUDY=both SEL=() ;;
  *)
    echo "unknown piece $PIECE" >&2
    exit 2
    ;;
esac

if [[ "$SMOKE" == 1 ]]; then
  PY=${PYTHON:-.venv/bin/python}
  export JAX_PLATFORMS=cpu PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_studies.XXXXXX")
  RESULTS=$WORK/results FIGURES=$WORK/figures DATA=$WORK/data
  # The tiny model on 32x32 canvases, a few steps; a wide σ window for untrained models.
  P_CONFIG="heatpose_jax/configs/synthetic.py:tiny"
  R_CONFIG=$P_CONFIG
  COMMON=(--config.input_hw="(32, 32)" --config.batch_size=8 --config.max_eval_examples=8
    --config.log_every=1 --config.phases.coarse.steps=2 --config.phases.fine.steps=1 --config.phases.joint.steps=1)
  P_EXTRA=(--window_px=16 --max_parallel=1)
  R_EXTRA=(--num_train=16 --max_parallel=1)
else
  PY=${PYTHON:-python3}
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  WORK=$PWD/.gpu/studies # ignored: kept between calls on a warm machine (resume)
  RESULTS=docs/results FIGURES=docs/figures DATA=$PWD/.gpu/data
  P_CONFIG="heatpose_jax/configs/synthetic.py:paper,bf16,steps=${PRECISION_STEPS:-2400}"
  R_CONFIG="heatpose_jax/configs/synthetic.py:paper,bf16,steps=${REGULARIZATION_STEPS:-1350}"
  COMMON=(--config.canvas_cache=True)
  P_EXTRA=(--max_parallel=3 --checkpoints_per_run=1)
  R_EXTRA=(--num_train="${NUM_TRAIN:-300}" --max_parallel=6 --checkpoints_per_run=1)
fi
mkdir -p "$WORK" "$RESULTS" "$FIGURES"
CACHE=$WORK/jaxcache
COMMON+=(--config.data_dir="$DATA" --compilation_cache_dir="$CACHE")
remaining() { echo $((DEADLINE - $(date +%s))); }

echo "== $(date -u +%FT%TZ) gpu_studies.sh $PIECE, SMOKE=$SMOKE, budget ${BUDGET_S} s, work $WORK"
git log -1 --format='== commit %H %s' 2>/dev/null || true
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [[ "$SMOKE" != 1 && "$STUDY" != regularization && "$PIECE" != report ]]; then
  # The precision runs' dataset (4000 / 500 renders at 256x256); the regularization
  # study builds its 300-image cut of it itself.
  t0=$(date +%s)
  timeout 150 "$PY" -m data_prep.build --dataset=synthetic --config=default --data_dir="$DATA" ||
    echo "== dataset build failed (exit $?): the study prepares it on demand"
  echo "== dataset: $(($(date +%s) - t0)) s"
fi

# study NAME CONFIG ARGS...: the study under `timeout` (SIGTERM checkpoints the runs),
# then, if it was cut short, a --notrain pass that writes the outputs from what finished.
study() {
  local name=$1 config=$2
  shift 2
  local limit=$(($(remaining) - RESERVE_S))
  echo "== $name (limit ${limit} s): $*"
  local rc=0
  if ((limit > 30)); then
    timeout --kill-after=20 "$limit" "$PY" -m "experiments.${name}_study" --config="$config" \
      --workdir="$WORK" --out_dir="$RESULTS" --figures_dir="$FIGURES" "${COMMON[@]}" "$@"
    rc=$?
  else
    rc=124
  fi
  echo "== $name: exit $rc at $(($(date +%s) - START)) s"
  if [[ $rc != 0 ]]; then
    timeout $((RESERVE_S - 10)) "$PY" -m "experiments.${name}_study" --config="$config" \
      --workdir="$WORK" --out_dir="$RESULTS" --figures_dir="$FIGURES" "${COMMON[@]}" "$@" --notrain
    echo "== $name --notrain: exit $?; rerun this piece on the warm machine to resume"
  fi
  return $rc
}

RC=0
case $STUDY in
  precision) study precision "$P_CONFIG" "${P_EXTRA[@]}" "${SEL[@]}" || RC=$? ;;
  regularization) study regularization "$R_CONFIG" "${R_EXTRA[@]}" "${SEL[@]}" || RC=$? ;;
  both)
    study precision "$P_CONFIG" "${P_EXTRA[@]}" --notrain || RC=$?
    study regularization "$R_CONFIG" "${R_EXTRA[@]}" --notrain || RC=$?
    ;;
esac

# Throughput as logged by the runs (the sizing above assumes ~22 ms per step at 8x),
# and the end of each run's log.
for f in "$WORK"/*/runs/*/train.log; do
  [[ -f $f ]] || continue
  echo "== ${f#"$WORK"/}: last $(grep -o '[0-9.]* img/s' "$f" | tail -n 1)"
  tail -n 3 "$f"
done
# Paths relative to the folder that holds results/ and figures/ (the repository:
# `tar xzf` there puts them in place).
if [[ "$SMOKE" == 1 ]]; then
  BASE=$WORK RES=results FIG=figures
else
  BASE=$PWD RES=$RESULTS FIG=$FIGURES
fi
(cd "$BASE" && tar czf "$OUT/gpu_studies_$PIECE.tgz" $(ls -d "$RES"/precision* \
  "$RES"/regularization* "$FIG"/precision_* "$FIG"/regularization_* 2>/dev/null))
for s in precision regularization; do
  [[ -f "$RESULTS/$s.md" ]] && cp "$RESULTS/$s.md" "$OUT/"
done
echo "== done in $(($(date +%s) - START)) s, exit $RC; $(ls "$OUT" | tr '\n' ' ')"
exit $RC
