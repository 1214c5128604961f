"""Local provider: each replica is a bundled-runtime process on a free loopback port, on this machine.

State lives on disk under `<data_dir>/local-replicas/<key>/` — a spec file, one JSON state file and one log file per
replica — written by the per-replica supervisors (`local_replica.py`). Because observation reads files rather than
process handles, a restarted worker adopts live replicas as they are, and anything it finds that it no longer
wants is stopped: replicas are never orphaned.

Hostile input stays out of our own processes: supervisors start isolated from an allow-listed environment and
receive the replica's command and environment on stdin (`procenv.py`). A supervisor that dies before its replica
serves is restarted with exponential backoff and, after `max_failures` deaths in a row, the replica is `Failed` with
the cause, like a runtime crash loop. New replicas start only while this host has the CPUs and memory they need
(`capacity.py`); the rest wait, and the spec file carries the "not enough capacity" message that `observe` reports.
"""

from __future__ import annotations

import errno
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

from common.catalog import LOCAL_VENDOR, Machine
from common.engines import engine_info, is_gguf_repository
from common.failure import failure_cause
from common.logreader.local import REPLICAS_DIR, LocalLogReader, tail_lines
from worker.providers.base import (
    DesiredDeployment,
    FailureReason,
    ObservedDeployment,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    ReplicaStatus,
    SpecNotice,
)
from worker.providers.capacity import Free, LocalCapacity, Need, fitting, free_capacity, replica_need, shortage_message
from worker.providers.local_replica import pid_alive, write_json_atomic
from worker.providers.procenv import PRIVATE_UMASK, host_env, python_module_command, search_path

log = logging.getLogger(__name__)

LOG_TAIL_IN_MESSAGE = 12
# A supervisor that dies before its replica serves is started again after 1, 2, 4 ... seconds (at most this many).
RESTART_BACKOFF_MAX = 30.0
# Errors of spawning a supervisor that another try can cure (the host is short of processes or memory right now).
TEMPORARY_SPAWN_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


def _spawn_error(exc: OSError) -> ProviderError:
    """An OSError of starting a supervisor, as the reconciler understands it (a status message, not a traceback)."""
    message = f"could not start a replica: {exc.strerror or exc}"
    if exc.errno in TEMPORARY_SPAWN_ERRNOS:
        return ProviderTemporaryError(message)
    return ProviderPermanentError(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def looks_like_local_path(repository: str) -> bool:
    return repository.startswith(("/", "./", "../", "~")) or os.path.exists(repository)


# Engines that exist only as their own container images. The bundled runtime speaks TGI's variables, so a `tgi` or
# `custom` variant still runs here as the runtime (with a notice for a custom image); these do not.
_CONTAINER_ONLY = ("vllm", "sglang", "llamacpp", "tei")


def _serves_gguf(desired: DesiredDeployment) -> bool:
    """A GGUF repository, judged as the runtime judges a local directory (`.gguf` files and no `config.json`), or by
    its name or `GGUF_FILE` for a Hub repository."""
    if is_gguf_repository(desired.repository, desired.env):
        return True
    if not looks_like_local_path(desired.repository):
        return False
    path = Path(desired.repository).expanduser()
    try:
        return path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf"))
    except OSError:
        return False


def container_engine(desired: DesiredDeployment) -> str | None:
    """The engine `desired` names that this provider cannot run as a process (vLLM, SGLang, llama.cpp, TEI), or
    None."""
    if not desired.image:
        return None
    info = engine_info(next(iter(desired.image)))
    return info.label if info.kind in _CONTAINER_ONLY else None


class LocalProvider:
    name = "local"
    # A supervisor calls a replica ready when its health route answers on loopback; `running` also needs the
    # route through the gateway, exactly as clients will use it.
    verify_through_gateway = True

    def __init__(self, data_dir: Path, *, owner_pid: int | None = None, python: str | None = None,
                 host: str = "127.0.0.1", max_failures: int = 3, runtime_command: list[str] | None = None,
                 forkserver: str | None = None, capacity: LocalCapacity | None = None) -> None:
        self.root = Path(data_dir) / REPLICAS_DIR
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log_reader = LocalLogReader(data_dir)
        self.owner_pid = owner_pid
        self.python = python or sys.executable
        self.host = host
        self.max_failures = max_failures
        self.runtime_command = runtime_command or python_module_command(self.python, "runtime")
        self.forkserver = forkserver
        self.capacity = capacity or LocalCapacity()
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
            phase = state.get("phase", "Pending") if alive else self._dead_phase(state)
            ready = alive and bool(state.get("ready"))
            rep_revision = state.get("revision")
            replicas.append(ReplicaStatus(
                name=name, ready=ready, url=f"http://{self.host}:{state['port']}" if ready else None,
                revision=rep_revision, phase=phase, restarts=int(state.get("restarts", 0)),
                message=f"last exit code {state.get('last_exit_code')}" if state.get("last_exit_code") is not None else None,
            ))
            if rep_revision != revision or failure is not None:
                continue
            if phase == "Failed":
                failure = FailureReason.CRASH_LOOP if state.get("served_before") else FailureReason.MODEL_LOAD_FAILED
                lines = tail_lines(directory / f"{name}.log", LOG_TAIL_IN_MESSAGE)
                if state.get("last_error"):
                    count = state.get("start_failures") or state.get("consecutive_failures")
                    head = f"replica {name} failed to start {count} times in a row: {state['last_error']}"
                else:
                    head = (f"replica {name} exited with code {state.get('last_exit_code')} "
                            f"{state.get('consecutive_failures')} times in a row")
                # One line (the cause); the traceback stays in the replica's log, which `logs` shows.
                cause = failure_cause(lines)
                message = head + (f": {cause}" if cause else "") + "; details in the replica logs"
            elif phase == "Backoff" and not alive and message is None:
                wait = max(0.0, float(state.get("supervisor_restart_at", 0)) - time.time())
                message = (f"replica {name}: its supervisor exited {state.get('start_failures')} times before the "
                           f"replica served; next start in {wait:.0f}s")
        current = [r for r in replicas if r.revision == revision and r.phase != "Terminated"]
        old = [r for r in replicas if r.revision != revision and r.phase != "Terminated"]
        rollout_complete = not old and len(current) == spec["replicas"] and all(r.ready for r in current)
        running_revision = revision if (current or spec["replicas"] == 0 or not old) else old[0].revision
        shortage = spec.get("capacity") if spec["replicas"] else None
        return ObservedDeployment(
            exists=True, revision=running_revision, desired_replicas=spec["replicas"], replicas=tuple(replicas),
            rollout_complete=rollout_complete, failure=failure, message=message, pending_reason=shortage,
            pending_cause=FailureReason.INSUFFICIENT_CAPACITY if shortage else None,
        )

    @staticmethod
    def _dead_phase(state: dict) -> str:
        """What a replica whose supervisor is gone is: still Failed, waiting to be started again, or gone."""
        if state.get("phase") == "Failed":
            return "Failed"
        if state.get("supervisor_restart_at") and state.get("phase") == "Backoff":
            return "Backoff"
        return "Terminated"

    def apply(self, desired: DesiredDeployment) -> None:
        needs = container_engine(desired)
        if needs:
            raise ProviderPermanentError(f"the local provider runs only the bundled runtime, as processes: {needs} "
                                         f"needs a container engine (run it on the Kubernetes provider)")
        if looks_like_local_path(desired.repository) and not Path(desired.repository).expanduser().exists():
            raise ProviderPermanentError(f"model repository path {desired.repository} does not exist on this host")
        directory = self._dir(desired.key)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        previous = self._read_json(directory / "spec.json") or {}
        spec = {
            "revision": desired.revision, "replicas": desired.replicas, "endpoint_id": desired.endpoint_id,
            "namespace": desired.namespace, "name": desired.name, "updated_at": time.time(),
            # Kept until this pass decides again, so that an observe in between does not see the shortage vanish.
            "capacity": previous.get("capacity") if previous.get("revision") == desired.revision else None,
        }
        write_json_atomic(directory / "spec.json", spec)
        states = self._replica_states(desired.key)
        ordered = [f"r{desired.revision}-{i}" for i in range(desired.replicas)]
        wanted = set(ordered)
        if desired.replicas == 0 or previous.get("replicas", 0) == 0:
            # Starting from or going to zero is a fresh start: forget crash history (resume retries a failed model).
            for name, state in states.items():
                if name not in wanted or state.get("phase") == "Failed":
                    self._stop_replica(desired.key, name, state)
            states = self._replica_states(desired.key)
        to_start: list[tuple[str, dict]] = []
        for name in ordered:
            state = states.get(name)
            if state is None:
                to_start.append((name, {}))
            elif not self._supervisor_alive(state):
                if state.get("phase") == "Failed":
                    continue  # a crash-looped replica stays failed until the spec changes or the endpoint restarts
                carry = self._restart_carry(desired.key, name, state)
                if carry is not None:
                    to_start.append((name, carry))
        shortage = None
        if to_start:
            need = replica_need(self.capacity, desired.repository)
            free = self._free()
            fits = fitting(need, free, len(to_start))
            for name, carry in to_start[:fits]:
                self._start_replica(desired, name, need=need, carry=carry)
            if fits < len(to_start):
                shortage = shortage_message(need, free, running=len(ordered) - len(to_start) + fits,
                                            wanted=len(ordered))
                log.info("%s: %s", desired.key, shortage)
        if shortage != spec["capacity"]:
            write_json_atomic(directory / "spec.json", {**spec, "capacity": shortage})
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
        return self._log_reader.logs(key, tail=tail, follow=follow)

    def list_keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def accelerator_usage(self) -> None:
        """This host is not a pool of instance types: the catalog keeps its static figures."""
        return None

    def engine(self, desired: DesiredDeployment) -> str:
        return "endpointctl runtime (local processes" + (", GGUF)" if _serves_gguf(desired) else ")")

    def spec_notices(self, desired: DesiredDeployment) -> list[SpecNotice]:
        notices = []
        if "custom" in desired.image:
            url = desired.image["custom"].get("url")
            notices.append(SpecNotice("CustomImageNotRunnable",
                                      f"no container engine on the local provider: running the bundled runtime with "
                                      f"the env of image {url} instead"))
        hardware = desired.hardware
        if hardware.accelerator == "gpu" or hardware.vendor != LOCAL_VENDOR:
            # A cloud vendor or a GPU named in the spec is not what runs here: say which machine does (`describe`
            # shows the event), instead of letting "aws / us-east-1" stand for a local process.
            notices.append(SpecNotice("LocalHardware",
                                      f"{hardware.vendor} / {hardware.region} {hardware.instance_type} "
                                      f"{hardware.instance_size} requested; the local provider runs it as processes "
                                      f"on {Machine.detect().describe()} (CUDA when present, CPU otherwise)"))
        return notices

    def shutdown_all(self) -> None:
        """Stop every replica this data directory knows of (used when `endpointctl up` exits)."""
        for key in self.list_keys():
            for name, state in self._replica_states(key).items():
                self._stop_replica(key, name, state, remove_state=False)

    # -- processes -----------------------------------------------------------------------------------------
    def _free(self) -> Free:
        """What is left for new replicas: the host's CPUs less every live replica's share, and its available memory
        less the need of our replicas still loading."""
        held_cpus, loading = 0.0, 0
        for key in self.list_keys():
            for state in self._replica_states(key).values():
                if state.get("phase") in ("Failed", "Stopped") or not self._supervisor_alive(state):
                    continue
                held_cpus += float(state.get("cpus", self.capacity.replica_cpus))
                if not state.get("ready"):
                    loading += int(state.get("memory_bytes", 0))
        return free_capacity(self.capacity, held_cpus=held_cpus, loading_bytes=loading)

    def _restart_carry(self, key: str, name: str, state: dict) -> dict | None:
        """A replica whose supervisor is gone: the counters its next start carries, or None while it waits out its
        backoff or once it has failed (recorded in its state file, which `observe` reports)."""
        if state.get("phase") == "Stopped":
            return {}  # stopped on purpose (the stack shut down, its owner went away): start it afresh
        now = time.time()
        restart_at = state.get("supervisor_restart_at")
        if restart_at and state.get("phase") == "Backoff":
            if now < float(restart_at):
                return None
            return {"start_failures": int(state.get("start_failures", 0)), "restarts": int(state.get("restarts", 0))}
        # It died on its own. One that was serving starts a fresh count: one death is not a crash loop.
        failures = 1 if state.get("phase") == "Running" else int(state.get("start_failures", 0)) + 1
        state = {**state, "start_failures": failures, "ready": False}
        if failures >= self.max_failures:
            state.update(phase="Failed", last_error="its supervisor exited before the runtime could serve")
            log.warning("replica %s/%s: supervisor exited %s times in a row; giving up", key, name, failures)
        else:
            delay = min(RESTART_BACKOFF_MAX, 2.0 ** (failures - 1))
            state.update(phase="Backoff", supervisor_restart_at=now + delay)
            log.warning("replica %s/%s: supervisor exited; starting it again in %gs", key, name, delay)
        write_json_atomic(self._dir(key) / f"{name}.json", state)
        return None

    def _start_replica(self, desired: DesiredDeployment, name: str, *, need: Need, carry: dict) -> None:
        directory = self._dir(desired.key)
        port = free_port()
        state_path = directory / f"{name}.json"
        log_path = directory / f"{name}.log"
        write_json_atomic(state_path, {
            "revision": desired.revision, "port": port, "phase": "Pending", "ready": False, "restarts": 0,
            "consecutive_failures": 0, "created_at": time.time(), "cpus": need.cpus,
            "memory_bytes": need.memory_bytes, **carry,
        })
        health_route = "/" + desired.health_route.lstrip("/")
        cmd = [*python_module_command(self.python, "worker.providers.local_replica"), "--state", str(state_path),
               "--log", str(log_path), "--health-url", f"http://{self.host}:{port}{health_route}",
               "--max-failures", str(self.max_failures)]
        if self.owner_pid:
            cmd += ["--owner-pid", str(self.owner_pid)]
        if self.forkserver:
            cmd += ["--forkserver", self.forkserver]
        launch = json.dumps({"command": [*self.runtime_command, *(desired.args or [])],
                             "env": self._replica_env(desired, port, name)}).encode()
        # The supervisor's own output (a start-up error of its interpreter) goes where the replica's does.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            proc = subprocess.Popen(cmd, env=host_env(python=self.python), cwd=directory, stdin=subprocess.PIPE,
                                    stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    umask=PRIVATE_UMASK)
        except OSError as exc:
            state_path.unlink(missing_ok=True)
            raise _spawn_error(exc) from exc
        finally:
            os.close(log_fd)
        with self._lock:
            self._children[proc.pid] = proc
        try:
            proc.stdin.write(launch)
            proc.stdin.close()
        except OSError as exc:  # it died before reading: observed (and backed off) as a supervisor that exited
            log.warning("replica %s/%s: its supervisor did not take its launch document: %s", desired.key, name, exc)
        # Record the supervisor pid now, so an observe racing the supervisor's first write still sees it alive.
        state = self._read_json(state_path) or {}
        if not state.get("supervisor_pid"):
            state.update(supervisor_pid=proc.pid)
            write_json_atomic(state_path, state)
        log.info("started replica %s/%s on port %s (supervisor pid %s)", desired.key, name, port, proc.pid)

    def _replica_env(self, desired: DesiredDeployment, port: int, name: str) -> dict[str, str]:
        """Allow-listed host settings, then the tenant's env and secrets, then ours (see `procenv`)."""
        env = host_env(python=self.python)
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
        env["PATH"] = search_path(self.python)
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
