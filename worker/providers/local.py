"""Local provider: each replica is a bundled-runtime process on a free loopback port, on this machine.

State lives on disk under `<data_dir>/local-replicas/<key>/` — a spec file, one JSON state file and one log file per
replica — written by the per-replica supervisors (`local_replica.py`). Because observation reads files rather than
process handles, a restarted worker adopts live replicas as they are, and anything it finds that it no longer
wants is stopped: replicas are never orphaned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from worker.providers.base import (
    DesiredDeployment,
    FailureReason,
    ObservedDeployment,
    ProviderPermanentError,
    ReplicaStatus,
)
from worker.providers.local_replica import pid_alive, write_json_atomic

log = logging.getLogger(__name__)

LOG_TAIL_IN_MESSAGE = 12


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail_lines(path: Path, n: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-n:]


def looks_like_local_path(repository: str) -> bool:
    return repository.startswith(("/", "./", "../", "~")) or os.path.exists(repository)


class LocalProvider:
    name = "local"

    def __init__(self, data_dir: Path, *, owner_pid: int | None = None, python: str | None = None,
                 host: str = "127.0.0.1", max_failures: int = 3, runtime_command: list[str] | None = None,
                 forkserver: str | None = None) -> None:
        self.root = Path(data_dir) / "local-replicas"
        self.root.mkdir(parents=True, exist_ok=True)
        self.owner_pid = owner_pid
        self.python = python or sys.executable
        self.host = host
        self.max_failures = max_failures
        self.runtime_command = runtime_command or [self.python, "-m", "runtime"]
        self.forkserver = forkserver
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    # -- files ---------------------------------------------------------------------------------------------
    def _dir(self, key: str) -> Path:
        return self.root / key

    def _read_json(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _replica_states(self, key: str) -> dict[str, dict]:
        states = {}
        directory = self._dir(key)
        if not directory.is_dir():
            return states
        for path in sorted(directory.glob("r*.json")):
            state = self._read_json(path)
            if state is not None:
                states[path.stem] = state
        return states

    def _reap(self) -> None:
        """Collect exit statuses of supervisors this process started, so they don't linger as zombies."""
        with self._lock:
            for pid, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[pid]

    def _supervisor_alive(self, state: dict) -> bool:
        self._reap()
        pid = state.get("supervisor_pid")
        if not pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"local_replica" in cmdline

    # -- protocol ------------------------------------------------------------------------------------------
    def observe(self, key: str) -> ObservedDeployment:
        directory = self._dir(key)
        spec = self._read_json(directory / "spec.json")
        if spec is None:
            return ObservedDeployment(exists=False)
        revision = spec["revision"]
        replicas: list[ReplicaStatus] = []
        failure = None
        message = None
        for name, state in self._replica_states(key).items():
            alive = self._supervisor_alive(state)
            phase = state.get("phase", "Pending") if alive else "Terminated"
            ready = alive and bool(state.get("ready"))
            rep_revision = state.get("revision")
            replicas.append(ReplicaStatus(
                name=name, ready=ready, url=f"http://{self.host}:{state['port']}" if ready else None,
                revision=rep_revision, phase=phase, restarts=int(state.get("restarts", 0)),
                message=f"last exit code {state.get('last_exit_code')}" if state.get("last_exit_code") is not None else None,
            ))
            if phase == "Failed" and rep_revision == revision and failure is None:
                failure = FailureReason.CRASH_LOOP if state.get("served_before") else FailureReason.MODEL_LOAD_FAILED
                lines = tail_lines(directory / f"{name}.log", LOG_TAIL_IN_MESSAGE)
                message = (f"replica {name} exited with code {state.get('last_exit_code')} "
                           f"{state.get('consecutive_failures')} times in a row; last log lines:\n" + "\n".join(lines))
        current = [r for r in replicas if r.revision == revision and r.phase != "Terminated"]
        old = [r for r in replicas if r.revision != revision and r.phase != "Terminated"]
        rollout_complete = not old and len(current) == spec["replicas"] and all(r.ready for r in current)
        running_revision = revision if (current or spec["replicas"] == 0 or not old) else old[0].revision
        return ObservedDeployment(
            exists=True, revision=running_revision, desired_replicas=spec["replicas"], replicas=tuple(replicas),
            rollout_complete=rollout_complete, failure=failure, message=message,
        )

    def apply(self, desired: DesiredDeployment) -> None:
        if looks_like_local_path(desired.repository) and not Path(desired.repository).expanduser().exists():
            raise ProviderPermanentError(f"model repository path {desired.repository} does not exist on this host")
        directory = self._dir(desired.key)
        directory.mkdir(parents=True, exist_ok=True)
        previous = self._read_json(directory / "spec.json") or {}
        write_json_atomic(directory / "spec.json", {
            "revision": desired.revision, "replicas": desired.replicas, "endpoint_id": desired.endpoint_id,
            "namespace": desired.namespace, "name": desired.name, "updated_at": time.time(),
        })
        states = self._replica_states(desired.key)
        wanted = {f"r{desired.revision}-{i}" for i in range(desired.replicas)}
        if desired.replicas == 0 or previous.get("replicas", 0) == 0:
            # Starting from or going to zero is a fresh start: forget crash history (resume retries a failed model).
            for name, state in states.items():
                if name not in wanted or state.get("phase") == "Failed":
                    self._stop_replica(desired.key, name, state)
            states = self._replica_states(desired.key)
        for name in sorted(wanted):
            state = states.get(name)
            if state is None or not self._supervisor_alive(state):
                if state is not None and state.get("phase") == "Failed":
                    continue  # a crash-looped replica stays failed until the spec changes or the endpoint restarts
                self._start_replica(desired, name)
        current_ready = sum(
            1 for name in wanted
            if (s := self._read_json(directory / f"{name}.json")) and s.get("ready") and self._supervisor_alive(s)
        )
        for name, state in states.items():
            if name in wanted:
                continue
            same_revision = state.get("revision") == desired.revision
            # Surplus replicas of the current revision go at once; old revisions go once the new one is fully ready
            # (a surge rollout: the endpoint keeps serving during an update, and after a failed one).
            if same_revision or desired.replicas == 0 or current_ready >= desired.replicas:
                self._stop_replica(desired.key, name, state)

    def delete(self, key: str) -> None:
        for name, state in self._replica_states(key).items():
            self._stop_replica(key, name, state)
        shutil.rmtree(self._dir(key), ignore_errors=True)

    def logs(self, key: str, *, tail: int = 200, follow: bool = False) -> Iterator[str]:
        directory = self._dir(key)
        files = sorted(directory.glob("r*.log"), key=lambda p: p.stat().st_mtime) if directory.is_dir() else []
        multi = len(files) > 1
        for path in files:
            for line in tail_lines(path, tail):
                yield f"[{path.stem}] {line}" if multi else line
        if not follow:
            return
        offsets = {p: p.stat().st_size for p in files}
        quiet_since = time.monotonic()
        while directory.is_dir():
            for path in sorted(directory.glob("r*.log")):
                offset = offsets.get(path, 0)
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read(size - offset).decode("utf-8", "replace")
                    offsets[path] = size
                    quiet_since = time.monotonic()
                    for line in chunk.splitlines():
                        yield f"[{path.stem}] {line}"
            if time.monotonic() - quiet_since > 1.0:
                # An empty item is a heartbeat: it writes nothing, but it hands control back to the consumer, so a
                # follower whose client has left is noticed within a second instead of holding a thread forever.
                quiet_since = time.monotonic()
                yield ""
            time.sleep(0.25)

    def list_keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def shutdown_all(self) -> None:
        """Stop every replica this data directory knows of (used when `endpointctl up` exits)."""
        for key in self.list_keys():
            for name, state in self._replica_states(key).items():
                self._stop_replica(key, name, state, remove_state=False)

    # -- processes -----------------------------------------------------------------------------------------
    def _start_replica(self, desired: DesiredDeployment, name: str) -> None:
        directory = self._dir(desired.key)
        port = free_port()
        env = self._replica_env(desired, port, name)
        state_path = directory / f"{name}.json"
        log_path = directory / f"{name}.log"
        write_json_atomic(state_path, {
            "revision": desired.revision, "port": port, "phase": "Pending", "ready": False, "restarts": 0,
            "consecutive_failures": 0, "created_at": time.time(),
        })
        health_route = "/" + desired.health_route.lstrip("/")
        cmd = [self.python, "-m", "worker.providers.local_replica", "--state", str(state_path), "--log", str(log_path),
               "--health-url", f"http://{self.host}:{port}{health_route}", "--max-failures", str(self.max_failures)]
        if self.owner_pid:
            cmd += ["--owner-pid", str(self.owner_pid)]
        if self.forkserver:
            cmd += ["--forkserver", self.forkserver]
        cmd += ["--", *self.runtime_command, *(desired.args or [])]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        with self._lock:
            self._children[proc.pid] = proc
        # Record the supervisor pid now, so an observe racing the supervisor's first write still sees it alive.
        state = self._read_json(state_path) or {}
        if not state.get("supervisor_pid"):
            state.update(supervisor_pid=proc.pid)
            write_json_atomic(state_path, state)
        log.info("started replica %s/%s on port %s (supervisor pid %s)", desired.key, name, port, proc.pid)

    def _replica_env(self, desired: DesiredDeployment, port: int, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENDPOINTCTL_")}
        env.update(desired.env)
        env.update(desired.secrets)
        repository = str(Path(desired.repository).expanduser()) if looks_like_local_path(desired.repository) else desired.repository
        # In containers the model is mounted at /repository; here the repository itself plays that part.
        if env.get("MODEL_ID") in (None, "", "/repository"):
            env["MODEL_ID"] = repository
        if desired.model_revision and "REVISION" not in desired.env:
            env["REVISION"] = desired.model_revision
        # Markers that let operators (and tests) tell which endpoint a runtime process serves: `ps e`.
        env["ENDPOINTCTL_REPLICA"] = f"{desired.key}/{name}"
        env["ENDPOINTCTL_REPLICA_DIR"] = str(self._dir(desired.key))
        env["PORT"] = str(port)
        env["HOSTNAME"] = self.host
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _stop_replica(self, key: str, name: str, state: dict, *, remove_state: bool = True, grace: float = 15.0) -> None:
        pid = state.get("supervisor_pid")
        if pid and self._supervisor_alive(state):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.time() + grace
            while time.time() < deadline and pid_alive(pid):
                self._reap()
                time.sleep(0.05)
            if pid_alive(pid):
                child = state.get("child_pid")
                for victim in (pid, child):
                    if victim and pid_alive(victim):
                        try:
                            os.kill(victim, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        self._reap()
        # A runtime whose supervisor died abruptly dies with it (PDEATHSIG); this catches a pid recorded mid-start.
        child = state.get("child_pid")
        if child and pid_alive(child):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            if b"runtime" in cmdline:
                os.kill(child, signal.SIGKILL)
        if remove_state:
            for suffix in (".json",):
                (self._dir(key) / f"{name}{suffix}").unlink(missing_ok=True)
        log.info("stopped replica %s/%s", key, name)
