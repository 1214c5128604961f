"""Two `endpointctl up`s on one machine never break each other (issue 20, item 1), and what `up` tells a new user.

Each reproduction of the issue runs `endpointctl up` as a subprocess: a second `up` on the same data directory or on
a busy port is one line and exit 1 and leaves the first one serving; the CLI's record of local stacks keeps one entry
per data directory, so a stack stopping removes only its own; `--detach` returns once ready and `down` stops it; the
admin token reaches the terminal and its 0600 file, never a log. Replicas are not needed here, so the forkserver (a
torch import) is off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import ENDPOINTCTL, Cli, _base_env, run_in_terminal
from tests.fixtures.processes import free_port, stop_process_group, wait_until

pytestmark = pytest.mark.slow


@dataclass
class Up:
    proc: subprocess.Popen
    url: str
    data_dir: Path
    output: Path

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


def _env(home: Path) -> dict[str, str]:
    env = _base_env(home)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["ENDPOINTCTL_FORKSERVER"] = "off"
    return env


def start_up(home: Path, data_dir: Path, port: int) -> Up:
    """`endpointctl up` in the foreground, as the README runs it; returns once it has announced itself."""
    output = data_dir.parent / f"{data_dir.name}-up.out"
    with output.open("wb") as sink:
        proc = subprocess.Popen([ENDPOINTCTL, "up", "--port", str(port), "--data-dir", str(data_dir)], env=_env(home),
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    up = Up(proc, f"http://127.0.0.1:{port}", data_dir, output)
    try:
        wait_until(lambda: proc.poll() is not None or "endpointctl is up" in output.read_text(), timeout=120,
                   every=0.2, what="endpointctl up to start")
        assert proc.poll() is None, output.read_text()
    except BaseException:
        stop_process_group(proc)
        raise
    return up


def stop_up(up: Up) -> int:
    """Ctrl-C, as a user stops it."""
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGINT)
        try:
            return up.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stop_process_group(up.proc)
    return up.proc.returncode


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stacks-home")


@pytest.fixture(scope="module")
def first(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(home, tmp_path_factory.mktemp("first") / "data", free_port())
    try:
        yield up
    finally:
        stop_up(up)


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home, _env(home))


def recorded(cli: Cli) -> dict:
    r = cli("config", "show", "-o", "json")
    assert r.code == 0, r
    return json.loads(r.stdout)["settings"]


def test_second_up_on_the_same_data_dir_names_the_holder_and_leaves_the_first_alone(first: Up, cli: Cli) -> None:
    r = cli("up", "--port", str(free_port()), "--data-dir", str(first.data_dir), timeout=60)
    assert r.code == 1, r
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r
    assert f"pid {first.proc.pid}" in lines[0] and str(first.data_dir) in lines[0], r
    assert first.ready() and first.proc.poll() is None
    # Its record (the default target of every verb) is still there, and the verbs still reach it.
    assert recorded(cli)["url"] == first.url
    assert cli("list").code == 0


def test_second_up_on_a_busy_port_is_one_line_and_no_restart_loop(first: Up, cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    r = cli("up", "--port", first.url.rsplit(":", 1)[1], "--data-dir", str(other), timeout=60)
    assert r.code == 1, r
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "already in use" in lines[0], r
    assert "restarting" not in r.stderr and "endpointctl is up" not in r.stderr
    assert not (other / "logs" / "api.log").exists()  # refused before any child started
    assert first.ready() and recorded(cli)["url"] == first.url


def test_stacks_keep_their_own_records(first: Up, cli: Cli, home: Path, tmp_path: Path) -> None:
    second = start_up(home, tmp_path / "second", free_port())
    try:
        # The newest live stack is the default target; the first one's token still works for its own URL.
        assert recorded(cli)["url"] == second.url
        assert cli("--url", first.url, "list").code == 0
    finally:
        assert stop_up(second) == 0
    # The second one's exit removed only its own record: the verbs are back on the first stack.
    assert recorded(cli)["url"] == first.url
    assert cli("list").code == 0, cli("list")
    assert first.ready()


def test_a_killed_up_is_not_the_default_target(first: Up, cli: Cli, home: Path, tmp_path: Path) -> None:
    second = start_up(home, tmp_path / "second", free_port())
    os.killpg(second.proc.pid, signal.SIGKILL)  # no chance to forget its record
    second.proc.wait()
    assert recorded(cli)["url"] == first.url
    # And its data directory is free again: the kernel let go of the lock with the process.
    third = start_up(home, second.data_dir, free_port())
    assert stop_up(third) == 0


def test_detach_returns_when_ready_and_down_stops_it(cli: Cli, tmp_path: Path) -> None:
    data_dir = tmp_path / "detached"
    port = free_port()
    r = cli("up", "--detach", "--port", str(port), "--data-dir", str(data_dir), timeout=150)
    assert r.code == 0, r
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200  # ready when it returned, no polling
    pid = int((data_dir / "up.lock").read_text())
    assert recorded(cli)["url"] == url
    again = cli("up", "--detach", "--port", str(free_port()), "--data-dir", str(data_dir), timeout=60)
    assert again.code == 1 and f"pid {pid}" in again.stderr, again

    r = cli("down", "--data-dir", str(data_dir), timeout=120)
    assert r.code == 0 and "stopped" in r.stderr, r
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/readyz", timeout=2)
    assert recorded(cli)["url"] != url
    r = cli("down", "--data-dir", str(data_dir))
    assert r.code == 0 and "nothing to stop" in r.stderr, r


def test_up_says_where_the_dashboard_and_docs_are_and_keeps_the_token_out_of_logs(cli: Cli, home: Path,
                                                                                   tmp_path: Path) -> None:
    up = start_up(home, tmp_path / "data", free_port())
    token_file = up.data_dir / "admin-token"
    try:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        text = up.output.read_text()
        assert f"{up.url}/ui/" in text and f"{up.url}/docs" in text
        assert str(token_file) in text
        assert httpx.get(f"{up.url}/docs", timeout=5).status_code == 200
        # The CLI picks the token up for this stack by itself.
        r = cli("--url", up.url, "whoami", "-o", "json")
        assert r.code == 0, r
        # Something for the logs to say: a refused token, a listing, a token minted by the admin.
        assert cli("--url", up.url, "--token", "wrong", "list").code == 1
        assert cli("--url", up.url, "list").code == 0
        assert cli("--url", up.url, "token", "create", "--name", "ci").code == 0
    finally:
        assert stop_up(up) == 0
    assert token not in up.output.read_text()
    logs = [p for p in up.data_dir.rglob("*") if p.is_file() and p != token_file and p.suffix in (".log", ".out", ".json", "")]
    logs.append(up.output)
    assert any(p.name == "api.log" for p in logs)
    for path in logs:
        assert token.encode() not in path.read_bytes(), path


def test_a_fresh_token_is_shown_on_the_terminal_once(cli: Cli, tmp_path: Path) -> None:
    data_dir = tmp_path / "tty"
    r = run_in_terminal(cli, "up", "--detach", "--port", str(free_port()), "--data-dir", str(data_dir), timeout=150)
    try:
        assert r.code == 0, r
        token = (data_dir / "admin-token").read_text().strip()
        assert token in r.stdout
        assert token not in (data_dir / "logs" / "up.log").read_text()
    finally:
        assert cli("down", "--data-dir", str(data_dir), timeout=120).code == 0
    # Started again on the same data directory: the same token, and not printed again.
    r = run_in_terminal(cli, "up", "--detach", "--port", str(free_port()), "--data-dir", str(data_dir), timeout=150)
    try:
        assert r.code == 0, r
        assert token not in r.stdout and "admin-token" in r.stdout
        assert (data_dir / "admin-token").read_text().strip() == token
    finally:
        assert cli("down", "--data-dir", str(data_dir), timeout=120).code == 0


def test_an_api_that_loses_its_port_ends_the_stack_in_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port was free when checked and taken before the API bound it: reported, not restarted in a loop."""
    from cli import up as upmod

    monkeypatch.setenv("ENDPOINTCTL_FORKSERVER", "off")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    port = free_port()
    stack = upmod.Stack(port=port, data_dir=tmp_path / "data", admin_token="t-" + os.urandom(8).hex())
    monkeypatch.setattr(upmod, "check_port_free", lambda host, port: None)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(upmod.PortInUse, match="address already in use"):
            stack.start()
        stack.stop()

    # Started for real, then the API dies and someone takes its port: the supervisor stops instead of looping.
    stack = upmod.Stack(port=port, data_dir=tmp_path / "data", admin_token="t-" + os.urandom(8).hex())
    stack.start()
    try:
        stack.api.proc.kill()
        stack.api.proc.wait()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            deadline = time.monotonic() + 60
            with pytest.raises(upmod.PortInUse, match="address already in use"):
                while time.monotonic() < deadline:
                    stack.supervise_once()
                    time.sleep(0.2)
            assert stack.api.restarts == 1
    finally:
        stack.stop()
