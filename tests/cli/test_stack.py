"""The CLI against the whole embedded stack started by `endpointctl up` (API, gateway, worker, beat, replicas).

Here endpoints really run: a missing model ends in `failed` (and `wait` says so), the tiny model serves chat
through the gateway with the OpenAI SDK, logs come from the replica's log file, and the actions move the state.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import ENDPOINTCTL, Cli, _base_env, cli_for, run_in_terminal
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    url: str
    token: str
    data_dir: Path
    proc: subprocess.Popen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    home = tmp_path_factory.mktemp("stack-home")
    token = "admin-" + secrets.token_hex(16)
    port = free_port()
    env = _base_env(home)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["ENDPOINTCTL_ADMIN_TOKEN"] = token
    log = data_dir / "up.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([ENDPOINTCTL, "up", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"endpointctl up exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"endpointctl up not ready in 120s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Stack(url=url, token=token, data_dir=data_dir, proc=proc)
        # SIGINT is Ctrl-C: `up` must stop everything it started, replicas included, and exit 0.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def scli(tmp_path: Path, stack: Stack) -> Cli:
    return cli_for(tmp_path, url=stack.url, token=stack.token)


def test_wait_reports_a_failed_deployment(scli: Cli, unique_name: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    r = scli("create", unique_name, "-r", str(missing), "--task", "text-generation")
    assert r.code == 0, r
    r = scli("wait", unique_name, "--timeout", "240", timeout=300)
    assert r.code == 1, r
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: endpoint {unique_name} failed to deploy: "), r
    ep = json.loads(scli("describe", unique_name, "-o", "json").stdout)
    assert ep["status"]["state"] == "failed" and ep["status"]["message"]
    assert scli("delete", unique_name, "--yes", "--wait", "--timeout", "60").code == 0


def test_lifecycle_of_a_tiny_model(scli: Cli, unique_name: str, tiny_model_dir: Path) -> None:
    r = scli("create", unique_name, "-r", str(tiny_model_dir), "--task", "text-generation", "--type", "authenticated",
             "--wait", "--timeout", "300", timeout=360)
    assert r.code == 0, r
    assert f"endpoint admin/{unique_name} created (state: running) — {scli.env['ENDPOINTCTL_URL']}/endpoints/admin/{unique_name}" in r.stdout, r

    r = scli("wait", unique_name, "--timeout", "60")
    assert r.code == 0 and r.stdout.strip() == f"endpoint admin/{unique_name} is running — {scli.env['ENDPOINTCTL_URL']}/endpoints/admin/{unique_name}", r
    ep = json.loads(scli("wait", unique_name, "--timeout", "60", "-o", "json").stdout)
    assert ep["status"]["state"] == "running" and ep["status"]["readyReplica"] == 1

    r = scli("list")
    row = next(line for line in r.stdout.splitlines() if line.startswith(unique_name + " "))
    assert " running " in row and " 1/1 " in row, r

    # One-shot chat, streamed through the gateway with the OpenAI SDK.
    r = scli("chat", unique_name, "Say something", "--max-tokens", "8", "--temperature", "0", timeout=120)
    assert r.code == 0, r
    assert r.stdout.strip(), r
    r2 = scli("chat", unique_name, "Say something", "--max-tokens", "8", "--temperature", "0", "--no-stream", timeout=120)
    assert r2.code == 0 and r2.stdout == r.stdout, (r, r2)  # greedy: streamed and whole answers agree
    # Without --max-tokens the answer is bounded (chat's default, 256), not left to run to the end of the context:
    # the replica's own metrics record what each request asked for.
    endpoint_url = f"{scli.env['ENDPOINTCTL_URL']}/endpoints/admin/{unique_name}"

    def asked_for() -> float:
        auth = {"Authorization": f"Bearer {scli.env['ENDPOINTCTL_TOKEN']}"}
        text = httpx.get(f"{endpoint_url}/metrics", headers=auth, timeout=30).text
        return float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("tgi_request_max_new_tokens_sum")))

    before = asked_for()
    r = scli("chat", unique_name, "Say something", "--temperature", "0", "--no-stream", timeout=120)
    assert r.code == 0 and r.stdout.strip(), r
    assert asked_for() - before == 256
    # A conversation from stdin: two turns, two answers.
    r = scli("chat", unique_name, "--max-tokens", "4", "--system", "be brief", input="hello\nand again\n/exit\nignored\n", timeout=120)
    assert r.code == 0 and len([line for line in r.stdout.splitlines() if line.strip()]) >= 2, r

    # The interactive REPL on a terminal: a banner, a prompt per turn, /exit ends it.
    r = run_in_terminal(scli, "chat", unique_name, "--max-tokens", "4",
                        answers=[("> ", "hello\r"), ("> ", "/exit\r")], timeout=120)
    assert r.code == 0, r
    assert f"chatting with admin/{unique_name}" in r.stdout and r.stdout.count("> ") >= 2, r

    r = scli("logs", unique_name, "--tail", "50")
    assert r.code == 0 and r.stdout.strip(), r
    # Follow: the first lines arrive, then we stop it like a user would.
    follower = subprocess.Popen([ENDPOINTCTL, "logs", unique_name, "-f", "--tail", "5"], env=scli.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first.strip(), first
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    # Ctrl-C ends a follow as it ends `wait`: exit code 130.
    assert follower.returncode == 130, follower.stderr.read() if follower.stderr else ""

    r = scli("events", unique_name)
    assert r.code == 0 and "Created" in r.stdout, r

    r = scli("scale-to-zero", unique_name)
    assert r.code == 0, r
    deadline = time.monotonic() + 120
    while json.loads(scli("describe", unique_name, "-o", "json").stdout)["status"]["state"] != "scaledToZero":
        assert time.monotonic() < deadline, "never reached scaledToZero"
        time.sleep(1)
    # A chat wakes it: the gateway holds the request until a replica is ready.
    r = scli("chat", unique_name, "wake up", "--max-tokens", "4", timeout=300)
    assert r.code == 0 and r.stdout.strip(), r

    assert scli("pause", unique_name).code == 0
    deadline = time.monotonic() + 120
    while json.loads(scli("describe", unique_name, "-o", "json").stdout)["status"]["state"] != "paused":
        assert time.monotonic() < deadline, "never reached paused"
        time.sleep(1)
    r = scli("chat", unique_name, "hello")
    assert r.code == 1 and f"endpoint {unique_name} is paused: run `endpointctl resume {unique_name}` first" in r.stderr, r

    r = scli("resume", unique_name, "--wait", "--timeout", "300", timeout=360)
    assert r.code == 0 and "(state: running)" in r.stdout, r
    r = scli("resume", unique_name)
    assert r.code == 0 and "is already running" in r.stdout, r

    r = scli("delete", unique_name, "--yes", "--wait", "--timeout", "120", timeout=180)
    assert r.code == 0 and f"endpoint admin/{unique_name} deleted" in r.stderr, r
