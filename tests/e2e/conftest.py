"""Fixtures for end-to-end tests: the real embedded stack (`cli.up.Stack`: API + gateway + Celery worker + beat as
separate processes), on the embedded default or on real PostgreSQL + Redis, with real runtime replicas."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cli.up import Stack
from tests.fixtures.processes import free_port, wait_until

ADMIN_TOKEN = "epc_e2e-admin-token-0123456789abcdefghijklmnop"


def _processes() -> dict[int, tuple[int, bytes, bytes]]:
    """pid -> (ppid, cmdline, environ) of every live, non-zombie process."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_bytes()
            tail = stat[stat.rfind(b")") + 2:].split()
            if tail[0] in (b"Z", b"X"):
                continue
            cmdline = (proc / "cmdline").read_bytes()
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                environ = b""
            table[int(proc.name)] = (int(tail[1]), cmdline, environ)
        except (OSError, IndexError, ValueError):
            continue
    return table


def replica_processes(data_dir: Path, endpoint_key: str | None = None) -> dict[str, list[int]]:
    """Live supervisor and runtime processes started for `data_dir` (optionally one endpoint), by kind.

    Runtimes are found three ways, so that none can hide: by the environment marker of a fresh process, as children
    of a supervisor or of the forkserver (a forked runtime keeps the forkserver's command line and environment
    block), and by the pids the supervisors recorded."""
    table = _processes()
    replicas = data_dir / "local-replicas"
    marker = str(replicas / (endpoint_key or "")).encode()
    supervisors = [pid for pid, (_, cmd, _) in table.items() if b"local_replica" in cmd and marker in cmd]
    # Forked runtimes share the forkserver's command line; the forkserver is the one whose parent is not one of them.
    zygote_like = {pid for pid, (_, cmd, _) in table.items()
                   if b"worker.providers.forkserver" in cmd and str(data_dir).encode() in cmd}
    forkservers = {pid for pid in zygote_like if table[pid][0] not in zygote_like}
    recorded = set()
    for state_file in replicas.glob(f"{endpoint_key or '*'}/r*.json"):
        try:
            recorded.add(int(json.loads(state_file.read_text()).get("child_pid") or 0))
        except (OSError, ValueError):
            continue
    runtimes = []
    for pid, (ppid, cmd, env) in table.items():
        if pid in forkservers or b"local_replica" in cmd:
            continue
        if (b"ENDPOINTCTL_REPLICA_DIR=" + marker in env or ppid in supervisors or pid in recorded
                or (endpoint_key is None and ppid in forkservers)):
            runtimes.append(pid)
    return {"supervisors": supervisors, "runtimes": runtimes}


class Api:
    """Just enough of the v2 API over httpx for assertions on raw state."""

    def __init__(self, url: str, token: str = ADMIN_TOKEN) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def get(self, name: str, ns: str = "admin") -> dict:
        response = self.http.get(f"/v2/endpoint/{ns}/{name}")
        response.raise_for_status()
        return response.json()

    def state(self, name: str, ns: str = "admin") -> str:
        return self.get(name, ns)["status"]["state"]

    def wait_state(self, name: str, state: str, *, timeout: float = 180, ns: str = "admin") -> dict:
        last: dict = {}

        def reached() -> dict | None:
            last["status"] = (body := self.get(name, ns))["status"]
            return body if body["status"]["state"] == state else None

        try:
            return wait_until(reached, timeout=timeout, what=f"{ns}/{name} to be {state}")
        except AssertionError as exc:  # say where it stayed: state and message
            raise AssertionError(f"{exc}; last status: {last.get('status')!r}") from None

    def events(self, name: str, ns: str = "admin") -> list[dict]:
        return self.http.get(f"/v2/endpoint/{ns}/{name}/events", params={"limit": 100}).json()["items"]


def create_body(name: str, repository: str, **overrides) -> dict:
    body = {
        "compute": {"accelerator": "cpu", "instanceSize": "x1", "instanceType": "intel-icl",
                    "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": None}},
        "model": {"framework": "pytorch", "repository": repository, "revision": None, "image": {"huggingface": {}},
                  "task": "text-generation", "env": {"MAX_TOTAL_TOKENS": "512", "MAX_INPUT_TOKENS": "384"}},
        "name": name, "provider": {"region": "us-east-1", "vendor": "aws"}, "type": "authenticated",
    }
    for key, value in overrides.items():
        body[key] = value
    return body


def _start_stack(tmp_path: Path, extra_env: dict[str, str]) -> Stack:
    env = {"ENDPOINTCTL_IDLE_CHECK_INTERVAL": "2", "ENDPOINTCTL_AUTOSCALE_INTERVAL": "2",
           "ENDPOINTCTL_RESYNC_INTERVAL": "10", "ENDPOINTCTL_SCALE_DOWN_WINDOW": "6", **extra_env}
    return Stack(port=free_port(), data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, extra_env=env,
                 worker_concurrency=4)


@pytest.fixture
def make_stack(tmp_path: Path, request) -> Iterator[Callable[..., Stack]]:
    """Start a stack: `make_stack()` on the embedded default, `make_stack(backend="redis-postgres")` on real servers.

    `supervise=True` restarts exited children in the background as `endpointctl up` does; off by default so that
    tests which stop and restart a child themselves are not raced.
    """
    stacks: list[Stack] = []
    stop = threading.Event()
    supervisors: list[threading.Thread] = []

    def make(backend: str = "embedded", *, supervise: bool = False, **extra_env: str) -> Stack:
        env = dict(extra_env)
        if backend == "redis-postgres":
            postgres = request.getfixturevalue("postgres_server")
            redis = request.getfixturevalue("redis_server")
            redis.flush()
            env.update(DATABASE_URL=postgres.create_database(), REDIS_URL=redis.url)
        stack = _start_stack(tmp_path / f"stack{len(stacks)}", env)
        stacks.append(stack)
        stack.start()
        if supervise:
            def loop() -> None:
                while not stop.wait(0.5):
                    stack.supervise_once()
            supervisors.append(threading.Thread(target=loop, name="stack-supervisor", daemon=True))
            supervisors[-1].start()
        return stack

    yield make
    stop.set()
    for thread in supervisors:
        thread.join(timeout=10)
    for stack in stacks:
        stack.stop()
        # No orphans, ever: stopping the stack stops every replica it started.
        wait_until(lambda: not any(replica_processes(stack.data_dir).values()), timeout=30,
                   what="every replica process to stop")
