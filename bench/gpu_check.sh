#!/usr/bin/env bash
# GPU check (issue 21): on a machine with an NVIDIA GPU, PyTorch and transformers, and the project's other wheels
# installed (no network needed), load the model on CUDA in bf16, check greedy output against transformers' generate
# on the same device, run the throughput workload and print JSON (bench/gpu_check.py says what is measured).
#
#   bench/gpu_check.sh [MODEL_DIR] [gpu_check.py options]     # default model: the cached SmolLM2-135M-Instruct
#
# PYTHON picks the interpreter (default: the repository's .venv, else python3). Without a GPU it exits 2 at once
# with one line on stderr. The whole run is bounded by GPU_CHECK_TIMEOUT seconds (default 540).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu_check: FAIL: no NVIDIA GPU found (nvidia-smi is missing or lists no GPU); this check needs one" >&2
  exit 2
fi

PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

args=()
if [[ $# -gt 0 && "$1" != -* ]]; then
  args+=(--model "$1")
  shift
fi

exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-540}" "$PYTHON" bench/gpu_check.py --device cuda "${args[@]}" "$@"
