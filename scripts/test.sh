#!/usr/bin/env bash
# The test suite on CPU: 8 fake devices so data parallelism is exercised.
set -euo pipefail
cd "$(dirname "$0")/.."
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" -q "$@"
