#!/usr/bin/env bash
# Sets up the checkout (idempotently) and runs the main job on the embedded default: SQLite, an embedded broker,
# local runtime processes and a tiny locally built model, ending with a chat answer through the OpenAI SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/endpointctl demo "$@"
