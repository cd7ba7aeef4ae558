#!/usr/bin/env bash
# The paper's claims at the CPU study geometry (`synthetic.py:cpu`: 128-px crops,
# torso ≈ 43 px, 4× pooling = the paper's 0.1-torso cell, a 20-px fine window), on
# this machine's CPU cores, one piece per call (issue 17; docs/precision.md).
#
#   bash scripts/cpu_studies.sh p4      # precision, 4×, clean labels, seeds 0,1,2 (the headline)
#   bash scripts/cpu_studies.sh p8      # precision, 8× (cell ≈ 0.19 torso), clean, seeds 0,1,2
#   bash scripts/cpu_studies.sh p16     # precision, 16× (cell ≈ 0.38 torso), clean, seeds 0,1,2
#   bash scripts/cpu_studies.sh p4n     # precision, 4×, label noise, seeds 0,1,2
#   bash scripts/cpu_studies.sh p4n-paper  # the same with the paper's three phases
#   bash scripts/cpu_studies.sh p4o     # p4 with the coarse model's options: context blocks, head_norm
#   bash scripts/cpu_studies.sh p8o     # p8 with the same options (pooling, Fig. 8)
#   bash scripts/cpu_studies.sh p16o    # p16 with the same options
#   bash scripts/cpu_studies.sh p4no    # p4n with the same options
#   bash scripts/cpu_studies.sh r1      # regularization, 300 training images: SpatialDropout, none
#   bash scripts/cpu_studies.sh r2      # regularization: standard dropout, standard cascade (Fig. 13)
#   bash scripts/cpu_studies.sh r3      # regularization, 100 training images: SpatialDropout, none
#   bash scripts/cpu_studies.sh r4      # the same: standard dropout
#   bash scripts/cpu_studies.sh r3o     # r3 with the coarse model's options (p4o's)
#   bash scripts/cpu_studies.sh r4o     # r4 with the same options (standard dropout)
#   bash scripts/cpu_studies.sh r1o     # r1 with the same options (300 images)
#   bash scripts/cpu_studies.sh r2o     # r2 with the same options (standard dropout, standard cascade)
#   bash scripts/cpu_studies.sh report  # rewrite r1-r4's, p4n-paper's and the options' (p4o, p8o, p16o, p4no, r1o-r4o) outputs from their records
#
# Schedules. p4, p4n, p8 and p16 train the `cpu` config's own: 1,200 coarse steps,
# then 800 of both nets on E1 + E2 (`common.joint_schedule`, ≈ 10 min per seed alone
# on two cores). p4n-paper and r1-r4 were measured with the paper's three phases,
# 1,200 / 400 / 400 (`cpu,schedule=paper`), and keep them, so that their records
# stay matched (docs/precision.md says which result used which).
#
# The regularization runs compare at 8× (`studies.runs.MAIN_POOL`; 0.19 torso here)
# with the model's dropout set per variant; 2,000 steps over 300 images are ≈ 107
# epochs. Each piece is 6 runs (≈ 65 min; r4: 3). At 300 images no variant
# over-fitted (r1, BUILD_NOTES.md), so r3/r4 keep 100 (≈ 320 epochs), with their
# outputs in docs/results/regularization_n100/ and docs/figures/regularization_n100/
# and their runs in $WORK/n100. r3o is r3 with OPTIONS (its schedule too, so that
# only the model differs), into docs/results/regularization_options_n100/ and
# docs/figures/regularization_options_n100/, its runs in $WORK/options_n100; r4o
# (r4 with OPTIONS) adds standard dropout to the same outputs. r1o and r2o are r1
# and r2 with OPTIONS, into docs/results/regularization_options/ and
# docs/figures/regularization_options/, their runs in $WORK/options.
#
# A piece of three seeds takes ≈ 35 min. A piece can be stopped (Ctrl-C checkpoints
# the run) and called again: finished runs are reused from their records in
# docs/results/precision_records/, an unfinished one resumes from its checkpoint
# under $WORK. Every call of p4, p8 or p16 rewrites docs/results/precision.{json,md}
# and docs/figures/precision_* from all the matching records present: commit them
# after each piece; p4n adds its noise group to them. p4n-paper writes to
# docs/results/precision_noise/ and docs/figures/precision_noise/ instead, its runs
# in $WORK/paper (the same run names as p4n's). p4o (not the paper's model: two
# residual blocks after the banks' merge and GroupNorm in the head, ≈ 15 min per seed),
# p8o, p16o and p4no write to docs/results/precision_options/ and
# docs/figures/precision_options/ (each call from all their records, as p4/p8/p16),
# their runs in $WORK/options.
#
# Environment: TFDS_DATA_DIR (default ~/tensorflow_datasets; the 256×256 synthetic
# renders are built on first use, ≈ 1.5 min), WORK (default workdir/cpu_studies).
set -euo pipefail
cd "$(dirname "$0")/.."
PIECE=${1:?usage: cpu_studies.sh p4|p4n|p4n-paper|p4o|p8o|p16o|p4no|p8|p16|r1|r2|r3|r4|r1o|r2o|r3o|r4o|report}
# The coarse model's options of p4o (docs/precision.md, "A standard model at the CPU study geometry").
OPTIONS=(--config.model.context_blocks=2 --config.model.head_norm=True)
DATA_DIR=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
WORK=${WORK:-workdir/cpu_studies}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
STUDY=precision
OUT=docs/results FIGS=docs/figures
CONFIG=cpu,schedule=paper # all but p4, p4n, p8, p16 (above)
# regularization_set SUB: the outputs, workdir and arguments of the regularization
# pieces' SUB ('' for r1/r2, n100 for r3/r4, options for r1o/r2o, options_n100 for
# r3o/r4o). Each has its own workdir: runs are reused by name, and r3's have r1's names.
regularization_set() {
  EXTRA=()
  [[ $1 == *n100 ]] && EXTRA+=(--num_train=100)
  [[ $1 == options* ]] && EXTRA+=("${OPTIONS[@]}")
  OUT=docs/results${1:+/regularization_$1} FIGS=docs/figures${1:+/regularization_$1}
  WORK=$BASE_WORK${1:+/$1}
}
BASE_WORK=$WORK
case $PIECE in
  p4) CONFIG=cpu SEL=(--pools=4 --groups=clean --seeds=0,1,2) ;;
  p4n) CONFIG=cpu SEL=(--pools=4 --groups=noise --seeds=0,1,2) ;;
  p4n-paper) # Its own outputs and runs: another schedule than p4n's (above).
    OUT=docs/results/precision_noise FIGS=docs/figures/precision_noise WORK=$WORK/paper
    SEL=(--pools=4 --groups=noise --seeds=0,1,2)
    ;;
  p4o | p8o | p16o | p4no)
    CONFIG=cpu OUT=docs/results/precision_options FIGS=docs/figures/precision_options
    group=clean
    [[ $PIECE == p4no ]] && group=noise
    WORK=$WORK/options SEL=(--pools=${PIECE//[!0-9]/} --groups=$group --seeds=0,1,2 "${OPTIONS[@]}")
    ;;
  p8) CONFIG=cpu SEL=(--pools=8 --groups=clean --seeds=0,1,2) ;;
  p16) CONFIG=cpu SEL=(--pools=16 --groups=clean --seeds=0,1,2) ;;
  r[1-4] | r[1-4]o)
    STUDY=regularization
    n=${PIECE:1:1}
    groups=(- spatial_dropout,no_dropout standard_dropout,standard_cascade spatial_dropout,no_dropout standard_dropout)
    sub=$([[ $PIECE == *o ]] && echo options || true)
    ((n >= 3)) && sub=${sub:+${sub}_}n100
    regularization_set "$sub"
    SEL=(--groups=${groups[n]} --seeds=0,1,2 "${EXTRA[@]}")
    ;;
  report) STUDY=report ;;
  *)
    echo "cpu_studies.sh: unknown piece '$PIECE' (p4, p4n, p4n-paper, p4o, p8o, p16o, p4no, p8, p16, r1, r2, r3, r4, r1o, r2o, r3o, r4o, report)" >&2
    exit 2
    ;;
esac
# run_study STUDY OUT_DIR FIGURES_DIR ARGS...
run_study() {
  local study=$1 out=$2 figs=$3
  shift 3
  .venv/bin/python -m "experiments.${study}_study" \
    --config="heatpose_jax/configs/synthetic.py:$CONFIG" --config.data_dir="$DATA_DIR" \
    --workdir="$WORK" --out_dir="$out" --figures_dir="$figs" --max_parallel=1 "$@"
}
if [[ $STUDY == report ]]; then
  # Not docs/results/precision.*: p4, p8 and p16 rewrite it themselves.
  for sub in "" n100; do
    regularization_set "$sub"
    run_study regularization "$OUT" "$FIGS" --notrain "${EXTRA[@]}"
  done
  WORK=$BASE_WORK
  run_study precision docs/results/precision_noise docs/figures/precision_noise --notrain \
    --pools=4 --groups=noise
  CONFIG=cpu WORK=$WORK/options run_study precision docs/results/precision_options \
    docs/figures/precision_options --notrain --pools=4,8,16 --groups=clean,noise "${OPTIONS[@]}"
  for sub in options options_n100; do
    regularization_set "$sub"
    run_study regularization "$OUT" "$FIGS" --notrain "${EXTRA[@]}"
  done
else
  run_study "$STUDY" "$OUT" "$FIGS" "${SEL[@]}"
fi
