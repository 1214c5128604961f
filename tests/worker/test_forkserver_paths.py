"""The forkserver's socket lives in the data directory, whose path a user chooses: deep homes and test directories
pass the ~107 bytes an AF_UNIX address holds (`OSError: AF_UNIX path too long` used to stop `endpointctl up`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.processes import stop_process_group, wait_until
from worker.providers.forkserver import ForkedChild


def test_a_socket_path_longer_than_af_unix_allows_still_serves_forks(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    deep.mkdir(parents=True, mode=0o700)
    sock = deep / "forkserver.sock"
    assert len(os.fsencode(str(sock))) > 108
    server = subprocess.Popen([sys.executable, "-m", "worker.providers.forkserver", "--socket", str(sock),
                               "--preload", "", "--owner-pid", str(os.getpid())],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: sock.exists() or server.poll() is not None, timeout=30, what="the forkserver's socket")
        assert server.poll() is None, server.stdout.read().decode(errors="replace")
        assert oct(sock.stat().st_mode & 0o777) == "0o600"

        marker = tmp_path / "forked.txt"
        child = ForkedChild.spawn(str(sock), module="tests.worker.forked_probe", argv=[str(marker)], env={},
                                  log_path=str(tmp_path / "child.log"), watch_pid=os.getpid())
        assert child.wait(timeout=30) == 0
        assert marker.read_text() == "forked"
    finally:
        stop_process_group(server)
