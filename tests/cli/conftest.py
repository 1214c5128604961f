"""A live control plane (`python -m controlplane`) on a free loopback port, and a runner for the CLI as a subprocess.

The server gets its own data directory (SQLite, embedded broker) and a known admin token; no worker runs, so
endpoints created here stay `pending`. Every CLI run gets an empty HOME and its own config file, so a developer's
~/.config/endpointctl never leaks into the tests.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.up import wait_ready
from tests.fixtures.processes import free_port, stop_process_group

ENDPOINTCTL = str(Path(sys.executable).with_name("endpointctl"))
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ControlPlane:
    url: str
    admin_token: str
    data_dir: Path
    log: Path


def start_controlplane(data_dir: Path, *, token: str, port: int | None = None,
                       gpu_emulation: bool = True) -> tuple[subprocess.Popen, ControlPlane]:
    """`python -m controlplane` on loopback with its own data dir; returns once /readyz answers 200."""
    log = data_dir / "server.log"
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDPOINTCTL_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"ENDPOINTCTL_DATA_DIR": str(data_dir), "ENDPOINTCTL_ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1",
                # The tests create GPU instance types on the local provider of a machine that may have no GPU.
                "ENDPOINTCTL_LOCAL_GPU_EMULATION": "true" if gpu_emulation else "false"})
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=60)  # the same readiness wait `endpointctl up` does
    except RuntimeError as exc:
        stop_process_group(proc)
        raise RuntimeError(f"{exc}:\n{log.read_text()[-3000:]}") from exc
    except BaseException:
        stop_process_group(proc)
        raise
    return proc, ControlPlane(url=url, admin_token=token, data_dir=data_dir, log=log)


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    proc, cp = start_controlplane(tmp_path_factory.mktemp("cp-data"), token="admin-" + secrets.token_hex(16))
    try:
        yield cp
    finally:
        stop_process_group(proc)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"Result(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


class Cli:
    """Runs `endpointctl` as a subprocess with a controlled environment."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
        full_env = {**self.env, **(env or {})}
        full_env = {k: v for k, v in full_env.items() if v is not None}
        proc = subprocess.run(
            [ENDPOINTCTL, *args], input=input if input is not None else "", capture_output=True, text=True,
            env=full_env, timeout=timeout, cwd=self.home,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDPOINTCTL_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "ENDPOINTCTL_CONFIG": str(home / ".config" / "endpointctl" / "config.yaml")})
    return env


def cli_for(tmp_path: Path, *, url: str, token: str) -> Cli:
    """The CLI with its own empty HOME, pointed at `url` with `token` through the environment."""
    home = tmp_path / "home"
    home.mkdir()
    env = _base_env(home)
    env.update({"ENDPOINTCTL_URL": url, "ENDPOINTCTL_TOKEN": token})
    return Cli(home, env)


@pytest.fixture
def cli(tmp_path: Path, controlplane: ControlPlane) -> Cli:
    """The CLI pointed at the live control plane as the admin (via the environment)."""
    return cli_for(tmp_path, url=controlplane.url, token=controlplane.admin_token)


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    """The CLI with no settings at all (no server needed)."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home, _base_env(home))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A DNS-label endpoint name unique per test (the server is shared by the session)."""
    return f"t{secrets.token_hex(3)}-" + request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:18].strip("-")


def run_in_terminal(cli: Cli, *args: str, answers: str | list[tuple[str, str]] = "", timeout: float = 60) -> Result:
    """Run the CLI on a pseudo-terminal (stdin, stdout and stderr all a TTY), as a person at a shell would.

    `answers` are typed in order, each once its trigger text has appeared since the previous answer; a plain
    string is the answer to the first question (a "?" in the output).
    """
    import pty
    import select

    script = [("?", answers)] if isinstance(answers, str) and answers else list(answers or [])
    leader, follower = pty.openpty()
    proc = subprocess.Popen([ENDPOINTCTL, *args], stdin=follower, stdout=follower, stderr=follower, env=cli.env,
                            cwd=cli.home, start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []
    since = 0  # output position after which the next trigger must appear
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpointctl {' '.join(args)} still running after {timeout}s: {b''.join(chunks)!r}")
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    data = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data and proc.poll() is not None:
                    break
                chunks.append(data)
                seen = b"".join(chunks)
                if script and script[0][0].encode() in seen[since:]:
                    os.write(leader, script.pop(0)[1].encode())
                    since = len(seen)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(leader)
    text = b"".join(chunks).decode("utf-8", "replace")
    return Result(proc.returncode, text, text)
