#!/usr/bin/env bash
# The quick start: set-up, then the tiny cascade through the paper's three phases on
# synthetic people (rendered on first use) on the CPU, and its evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-workdir/quickstart}
DATA_DIR=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
bash scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
.venv/bin/python -m experiments.train --config="heatpose_jax/configs/synthetic.py:tiny,tfds=small" \
  --workdir="$WORKDIR" --config.data_dir="$DATA_DIR" "${@:2}"
.venv/bin/python -m experiments.evaluate --workdir="$WORKDIR"
