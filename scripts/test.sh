#!/usr/bin/env bash
# Sets up everything the tests need (idempotently) and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
