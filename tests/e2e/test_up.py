"""`endpointctl up` as a user runs it: a subprocess that owns the whole stack, replicas included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.processes import free_port, wait_until

pytestmark = [pytest.mark.slow]


def stack_processes(data_dir: Path) -> list[int]:
    """Every live process that belongs to this data directory: API, worker, forkserver, supervisors, runtimes."""
    needle = str(data_dir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_bytes()
            if stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] in (b"Z", b"X"):
                continue
            if needle in (proc / "cmdline").read_bytes() or needle in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def start_up(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "ENDPOINTCTL_ADMIN_TOKEN": ADMIN_TOKEN, "ENDPOINTCTL_CONFIG": str(tmp_path / "cli.yaml"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(ready, timeout=120, what="endpointctl up to serve")
    return proc, url, data_dir


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_up_leaves_no_process_behind(stop_signal, tmp_path, tiny_model_dir):
    proc, url, data_dir = start_up(tmp_path)
    try:
        api = Api(url)
        assert api.http.post("/v2/endpoint/admin", json=create_body("owned", str(tiny_model_dir))).status_code == 201
        api.wait_state("owned", "running", timeout=240)
        assert len(stack_processes(data_dir)) >= 4  # API, worker, supervisor, runtime (and the forkserver)
        proc.send_signal(stop_signal)
        code = proc.wait(timeout=120)
        if stop_signal == signal.SIGTERM:
            assert code == 0, proc.stdout.read().decode()
        # SIGTERM stops everything in order; after SIGKILL the children die with their parent and the replicas
        # notice their owner is gone. Either way nothing may be left.
        wait_until(lambda: not stack_processes(data_dir), timeout=60, what="every stack process to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in stack_processes(data_dir):
            os.kill(pid, signal.SIGKILL)
