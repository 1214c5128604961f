"""The local provider against a hostile tenant: its input never configures our processes, our secrets never reach
its processes, start failures back off and end in `failed` with the cause, replicas start only where they fit,
and what the stack keeps on disk is its user's alone.

The payloads are the issue's own. They go around the API (straight to the provider, or into the database row),
because the API's 422 is one layer and these tests prove the process side holds without it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body, replica_processes
from tests.fixtures.processes import wait_until
from worker.providers.base import DesiredDeployment, FailureReason, HardwareSpec
from worker.providers.capacity import LocalCapacity, host_cpus
from worker.providers.local import LocalProvider

HOST_SECRET = "host-only-value-5e1b7c"  # in the stack's environment, as a credential of the operator would be


def payload(marker: Path) -> dict[str, str]:
    """The issue's code execution: PYTHONWARNINGS imports `antigravity`, which runs BROWSER as a command."""
    return {"PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": f"/bin/sh -c 'id > {marker}' #%s"}


def desired(key: str, repository: Path, *, replicas: int = 1, env: dict[str, str] | None = None,
            secrets: dict[str, str] | None = None) -> DesiredDeployment:
    return DesiredDeployment(
        endpoint_id=1, namespace="tenant", name=key, key=key, revision=1, replicas=replicas,
        repository=str(repository), model_revision=None, framework="pytorch", task="text-generation",
        image={"huggingface": {}}, command=None, args=None, env=env or {}, secrets=secrets or {},
        health_route="/health", port=80,
        hardware=HardwareSpec(vendor="aws", region="us-east-1", instance_type="intel-icl", instance_size="x1",
                              accelerator="cpu"),
    )


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[list[LocalProvider]]:
    """Providers a test creates; every replica they started is stopped afterwards."""
    made: list[LocalProvider] = []
    yield made
    for provider in made:
        for key in provider.list_keys():
            provider.delete(key)


def make_provider(providers: list[LocalProvider], data_dir: Path, **kwargs) -> LocalProvider:
    # Owned by this test process: should it die, the supervisors stop by themselves.
    provider = LocalProvider(data_dir, owner_pid=os.getpid(), **kwargs)
    providers.append(provider)
    return provider


@pytest.fixture
def broken_model(tmp_path: Path) -> Path:
    """A model directory the runtime gives up on right after its interpreter started (and imported torch)."""
    path = tmp_path / "broken-model"
    path.mkdir()
    (path / "config.json").write_text("{ not json")
    return path


def states(provider: LocalProvider, key: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (provider.root / key).glob("r*.json")}


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_tenant_env_configures_neither_supervisor_nor_runtime(providers, tmp_path, broken_model, monkeypatch):
    # The payload is live on this host: a plain interpreter given this environment runs the command.
    control = tmp_path / "control-marker"
    subprocess.run([sys.executable, "-c", "pass"], env={**payload(control), "PATH": os.environ["PATH"]},
                   timeout=60, check=False, capture_output=True)
    assert control.exists(), "the payload should run a command on a plain interpreter"

    # The worker's own credentials, which no replica or supervisor may inherit.
    monkeypatch.setenv("ENDPOINTCTL_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("DATABASE_URL", "postgresql://endpointctl:db-password@db/endpointctl")
    monkeypatch.setenv("EPC_OPERATOR_SECRET", HOST_SECRET)
    marker = tmp_path / "marker"
    provider = make_provider(providers, tmp_path / "data")
    provider.apply(desired("pwn", broken_model, env=payload(marker), secrets={"TENANT_SECRET": "tenant-value"}))

    # Wait until the runtime's interpreter has started (and given up on the model) at least once.
    seen: dict[str, bytes] = {}

    def ran_once():
        state = states(provider, "pwn").get("r1-0", {})
        for role in ("supervisor_pid", "child_pid"):
            pid = state.get(role)
            if pid and role not in seen:
                try:
                    seen[role] = environ(pid)
                except OSError:
                    pass
        return state.get("last_exit_code") is not None
    wait_until(ran_once, timeout=180, every=0.05, what="the runtime to start and exit once")

    assert not marker.exists(), "the tenant's PYTHONWARNINGS/BROWSER ran a command on the host"
    assert set(seen) == {"supervisor_pid", "child_pid"}, seen.keys()
    for role, block in seen.items():
        for forbidden in (ADMIN_TOKEN, "db-password", HOST_SECRET, "DATABASE_URL="):
            assert forbidden.encode() not in block, (role, forbidden)
    # The supervisor never sees the tenant's environment; the runtime does (it is its configuration), isolated.
    assert b"BROWSER=" not in seen["supervisor_pid"] and b"TENANT_SECRET" not in seen["supervisor_pid"]
    assert b"TENANT_SECRET=tenant-value" in seen["child_pid"]


def test_a_supervisor_that_cannot_start_backs_off_then_fails_with_its_error(providers, tmp_path):
    # An interpreter that dies at once, as `PYTHONHOME=/nonexistent` made the supervisor do.
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\necho 'Fatal Python error: init_fs_encoding (simulated)' >&2\nexit 1\n")
    python.chmod(0o755)
    provider = make_provider(providers, tmp_path / "data", python=str(python))
    spec = desired("respawn", tmp_path)
    applies = 0

    def failed():
        nonlocal applies
        provider.apply(spec)  # the reconciler asks again and again (every 0.5 s while initializing)
        applies += 1
        observed = provider.observe("respawn")
        return observed.failure is not None and observed
    observed = wait_until(failed, timeout=120, every=0.1, what="the replica to fail")

    log = (provider.root / "respawn" / "r1-0.log").read_text()
    assert log.count("init_fs_encoding (simulated)") == provider.max_failures
    assert applies > 3 * provider.max_failures, "asked often, started only max_failures times: it backed off"
    assert observed.failure is FailureReason.MODEL_LOAD_FAILED
    assert "failed to start 3 times in a row" in observed.message and "init_fs_encoding" in observed.message
    # Failed stays failed: asking again starts nothing.
    provider.apply(spec)
    assert (provider.root / "respawn" / "r1-0.log").read_text().count("init_fs_encoding") == provider.max_failures


def test_an_environment_too_big_to_exec_fails_the_replica_with_the_cause(providers, tmp_path):
    provider = make_provider(providers, tmp_path / "data")
    provider.apply(desired("huge", tmp_path, env={"HUGE": "x" * 200_000}))  # once raised E2BIG out of apply

    def failed():
        observed = provider.observe("huge")
        return observed.failure is not None and observed
    observed = wait_until(failed, timeout=120, every=0.2, what="the replica to fail")
    assert "could not start the runtime: Argument list too long" in observed.message
    assert "Traceback" not in (provider.root / "huge" / "r1-0.log").read_text()


def test_a_hundred_replicas_start_only_what_fits(providers, tmp_path):
    sleeper = [sys.executable, "-I", "-c", "import time; time.sleep(600)"]
    # Three replicas' CPU shares fit this host, whatever its size; memory is no limit here.
    capacity = LocalCapacity(replica_cpus=host_cpus() / 3, replica_memory_gb=0.01, reserve_memory_gb=0.0)
    provider = make_provider(providers, tmp_path / "data", runtime_command=sleeper, capacity=capacity)
    provider.apply(desired("many", tmp_path, replicas=100))
    provider.apply(desired("many", tmp_path, replicas=100))  # asking again starts nothing more
    assert len(states(provider, "many")) == 3
    observed = provider.observe("many")
    assert observed.pending_cause is FailureReason.INSUFFICIENT_CAPACITY
    assert observed.pending_reason.startswith("not enough capacity: 3 of 100 replicas started")
    assert "CPU: each replica needs" in observed.pending_reason and "memory" not in observed.pending_reason

    provider.apply(desired("other", tmp_path))
    assert not states(provider, "other")
    assert provider.observe("other").pending_reason.startswith("not enough capacity: 0 of 1")

    # Scaling the first one down frees its shares; the other starts on its next pass and reports nothing short.
    provider.apply(desired("many", tmp_path, replicas=1))
    provider.apply(desired("other", tmp_path))
    assert len(states(provider, "other")) == 1 and provider.observe("other").pending_reason is None


def test_memory_short_is_reported_with_how_much(providers, tmp_path):
    provider = make_provider(providers, tmp_path / "data", capacity=LocalCapacity(reserve_memory_gb=1e6))
    provider.apply(desired("big", tmp_path))
    assert not states(provider, "big")
    reason = provider.observe("big").pending_reason
    assert reason.startswith("not enough capacity: 0 of 1") and "memory: each replica needs 1.00 GiB" in reason


def _rewrite_env(stack, name: str, extra_env: dict[str, str]) -> None:
    """Change the stored spec as only a bug or a row from an older version could: around the API's validation."""
    from common.config import Settings
    from common.db import make_engine
    from common.models import Endpoint

    engine = make_engine(Settings(data_dir=stack.data_dir))
    try:
        with engine.begin() as conn:
            spec = conn.execute(select(Endpoint.spec).where(Endpoint.name == name)).scalar_one()
            spec["model"]["env"] = {**spec["model"]["env"], **extra_env}
            conn.execute(update(Endpoint).where(Endpoint.name == name).values(
                spec=spec, spec_revision=Endpoint.spec_revision + 1, generation=Endpoint.generation + 1))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_real_stack_keeps_tenant_and_control_plane_apart(make_stack, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EPC_OPERATOR_SECRET", HOST_SECRET)
    secrets_key = Fernet.generate_key().decode()
    # The stack's database, named explicitly so that DATABASE_URL is in its environment (and must go no further).
    database_url = f"sqlite:///{tmp_path / 'stack0' / 'data' / 'endpointctl.db'}"
    stack = make_stack(ENDPOINTCTL_SECRETS_KEY=secrets_key, DATABASE_URL=database_url)
    api = Api(stack.url)
    created = api.http.post("/v2/endpoint/admin", json=create_body("hostile", str(tiny_model_dir)))
    assert created.status_code == 201, created.text
    api.wait_state("hostile", "running", timeout=240)

    marker = tmp_path / "marker"
    _rewrite_env(stack, "hostile", {**payload(marker), "LD_PRELOAD": "/nonexistent/evil.so"})
    key = next(p.name for p in (stack.data_dir / "local-replicas").iterdir() if p.name.endswith("-hostile"))
    wait_until(lambda: any(s.get("ready") for s in states_in(stack.data_dir / "local-replicas" / key, "r2-")),
               timeout=240, what="revision 2 to serve")
    api.wait_state("hostile", "running", timeout=120)
    assert not marker.exists(), "the tenant's PYTHONWARNINGS/BROWSER ran a command on the host"
    refused = [e for e in api.events("hostile") if e["reason"] == "EnvRefused"]
    assert refused and "BROWSER" in refused[0]["message"] and "LD_PRELOAD" in refused[0]["message"]

    internal_token = (stack.data_dir / "internal-token").read_text().strip()
    forbidden = [ADMIN_TOKEN, internal_token, secrets_key, HOST_SECRET, "DATABASE_URL=", "REDIS_URL=",
                 "ENDPOINTCTL_ADMIN_TOKEN", "PYTHONWARNINGS=", "BROWSER=", "LD_PRELOAD="]
    procs = replica_processes(stack.data_dir)
    forkservers = [stack.forkserver.proc.pid]
    forked = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) in forkservers]
    checked = {*procs["supervisors"], *procs["runtimes"], *forkservers, *forked}
    assert procs["supervisors"] and procs["runtimes"] and forked
    for pid in checked:
        try:
            block = environ(pid).decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile (a replica of revision 1 being stopped)
        leaked = [item for item in forbidden if item in block]
        assert not leaked, (pid, leaked)

    # Data at rest: nothing in the data directory is open to group or others, files created late included.
    for path in [stack.data_dir, *stack.data_dir.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # a temporary file replaced meanwhile
        assert stat.S_IMODE(mode) & 0o077 == 0, f"{path} is {stat.filemode(mode)}"
    assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700


def states_in(directory: Path, prefix: str) -> list[dict]:
    found = []
    for path in directory.glob(f"{prefix}*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def _ppid(proc: Path) -> int | None:
    try:
        stat_line = (proc / "stat").read_bytes()
        return int(stat_line[stat_line.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.slow
def test_a_second_replica_that_does_not_fit_waits_with_the_reason(make_stack, tiny_model_dir):
    # One replica's CPU share fits this host, two do not.
    stack = make_stack(ENDPOINTCTL_LOCAL_REPLICA_CPUS=str(host_cpus() * 0.6), ENDPOINTCTL_LOCAL_RESERVE_CPUS="0")
    api = Api(stack.url)
    body = create_body("wide", str(tiny_model_dir))
    body["compute"]["scaling"].update(minReplica=2, maxReplica=2)
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
    running = api.wait_state("wide", "running", timeout=240)
    assert running["status"]["message"].startswith("not enough capacity: 1 of 2 replicas started"), running["status"]
    assert "CPU" in running["status"]["message"]
    assert running["status"]["readyReplica"] == 1 and running["status"]["targetReplica"] == 2

    assert api.http.post("/v2/endpoint/admin", json=create_body("late", str(tiny_model_dir))).status_code == 201
    pending = wait_until(lambda: (b := api.get("late"))["status"]["message"] and b, timeout=60,
                         what="the second endpoint to say why it waits")
    assert pending["status"]["state"] == "pending"
    assert pending["status"]["message"].startswith("not enough capacity: 0 of 1")
    key = next(p.name for p in (stack.data_dir / "local-replicas").iterdir() if p.name.endswith("-late"))
    assert not replica_processes(stack.data_dir, key)["supervisors"]

    # Room made: the waiting endpoint starts by itself.
    assert api.http.delete("/v2/endpoint/admin/wide").status_code in (200, 202, 204)
    api.wait_state("late", "running", timeout=240)


def test_a_gguf_repository_is_sized_as_its_dequantized_weights(tmp_path: Path) -> None:
    """A 4-bit GGUF file takes about seven times its size once dequantized to fp32; several quantizations of one
    model are one model."""
    from worker.providers.capacity import weights_bytes

    (tmp_path / "m.Q4_1.gguf").write_bytes(b"\0" * 9_000)
    assert weights_bytes(str(tmp_path)) == 64_000
    (tmp_path / "m.F16.gguf").write_bytes(b"\0" * 10_000)
    assert weights_bytes(str(tmp_path)) == 64_000
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1_000)
    assert weights_bytes(str(tmp_path)) == 65_000
