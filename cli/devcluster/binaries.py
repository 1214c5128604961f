"""Where the Go-built cluster binaries live, building them through scripts/build-kube.sh when missing."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cli.devcluster.errors import BinariesMissing

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def kwok_stage_dir(self) -> Path:
        return self.bin_dir.parent / "kwok-stages"


def find_binaries(*, build: bool = True, timeout: float = 5400.0) -> Binaries:
    """The cached binaries; `ENDPOINTCTL_KUBE_BIN_DIR` points at a prebuilt set (it must hold all five).

    With `build=True` a missing cache is built now (a cold build takes tens of minutes; see scripts/build-kube.sh),
    otherwise `BinariesMissing` says how to build it.
    """
    override = os.environ.get("ENDPOINTCTL_KUBE_BIN_DIR")
    if override:
        bins = Binaries(Path(override))
    else:
        if not BUILD_SCRIPT.exists():
            raise BinariesMissing(f"{BUILD_SCRIPT} not found; set ENDPOINTCTL_KUBE_BIN_DIR to prebuilt binaries")
        args = [str(BUILD_SCRIPT)] + ([] if build else ["--print"])
        # A cold build takes tens of minutes: its progress goes to our stderr; stdout carries the bin directory.
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=None if build else subprocess.DEVNULL, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            hint = (f"; building them failed (exit code {proc.returncode}, see the build output above)" if build
                    else " (run scripts/build-kube.sh once; a cold build takes a while)")
            raise BinariesMissing("simulated cluster binaries are not built" + hint)
        bins = Binaries(Path(proc.stdout.strip().splitlines()[-1]))
    missing = [n for n in NAMES if not bins.path(n).is_file()]
    if missing:
        raise BinariesMissing(f"missing in {bins.bin_dir}: {', '.join(missing)}")
    if not (bins.kwok_stage_dir / "pod" / "fast" / "pod-ready.yaml").is_file():
        raise BinariesMissing(f"kwok stage manifests missing in {bins.kwok_stage_dir}; rerun scripts/build-kube.sh")
    return bins
