#!/usr/bin/env bash
# Set-up (idempotent), then the test suite on the CPU. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadgroup -q "$@"
