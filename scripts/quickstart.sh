#!/usr/bin/env bash
# The quick start: set-up, synthetic people, the tiny cascade through the paper's
# three phases on the CPU (about 5 minutes on 2 cores), coarse vs cascade evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-workdir/quickstart}
DATA_DIR=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
bash scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
CONFIG="heatpose_jax/configs/synthetic.py:tiny,tfds=small"
.venv/bin/python -m data_prep.build --dataset=synthetic --config=small --data_dir="$DATA_DIR"
.venv/bin/python -m experiments.train --config="$CONFIG" --workdir="$WORKDIR" \
  --config.data_dir="$DATA_DIR" "${@:2}"
.venv/bin/python -m experiments.evaluate --config="$CONFIG" --workdir="$WORKDIR" \
  --config.data_dir="$DATA_DIR"
cat "$WORKDIR/eval_test/table.txt"
