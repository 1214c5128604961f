"""Per-replica supervisor for the local provider: a tiny kubelet for one runtime process.

Why a separate process: the worker that starts replicas may crash or restart at any time (it is a Celery
worker), but replicas must keep serving and must never be orphaned. The supervisor
- runs the runtime as its child with PR_SET_PDEATHSIG, so the runtime never outlives it;
- restarts the child with exponential backoff when it dies, and gives up (phase Failed) after repeated crashes
  without ever becoming ready, so the reconciler can report `failed` with the last log lines;
- probes the health route and publishes readiness, restarts and exit codes in a JSON state file that the provider
  reads instead of talking to processes (observe stays cheap and works after a worker restart);
- watches an owner process (`endpointctl up`): when the owner is gone, the replica stops, so even a SIGKILLed
  stack leaves no process behind.

The supervisor's own interpreter never sees the tenant's environment: it runs isolated from a minimal environment
(`procenv.py`), and the runtime's command and environment arrive as one JSON document on its stdin, which also keeps
secrets off every command line and out of every file. A runtime that cannot even be started (an environment too
large to exec, a missing interpreter) counts as a failed start like a crash, with the error as its cause.

Usage: python -I -u -m worker.providers.local_replica --state S --log L --health-url U [--owner-pid P]
       < {"command": [...], "env": {...}}
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from worker.providers.procenv import PRIVATE_UMASK, split_module_command

PR_SET_PDEATHSIG = 1
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def pid_alive(pid: int | None) -> bool:
    """True for a live, non-zombie process."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces or parentheses.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace `path` as a whole, readable by the stack's user only (whatever the process umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data))
    os.replace(tmp, path)


def probe(url: str, timeout: float = 2.0) -> bool:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Supervisor:
    def __init__(self, args: argparse.Namespace, launch: dict) -> None:
        self.state_path = Path(args.state)
        self.log_path = Path(args.log)
        self.health_url = args.health_url
        self.owner_pid = args.owner_pid
        self.max_failures = args.max_failures
        self.command = [str(part) for part in launch["command"]]
        self.env = {str(k): str(v) for k, v in launch["env"].items()}
        self.forkserver = args.forkserver
        self.startup_timeout = args.startup_timeout
        self.stopping = False
        self.child: subprocess.Popen | None = None
        previous = {}
        if self.state_path.exists():
            try:
                previous = json.loads(self.state_path.read_text())
            except ValueError:
                previous = {}
        self.state = {
            **previous,
            "supervisor_pid": os.getpid(),
            "child_pid": None,
            "phase": "Starting",
            "ready": False,
            "restarts": previous.get("restarts", 0),
            "consecutive_failures": previous.get("consecutive_failures", 0),
            "ever_ready": False,
            "started_at": time.time(),
        }

    def log(self, message: str) -> None:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"[supervisor {time.strftime('%H:%M:%S')}] {message}\n")

    def save(self, **changes) -> None:
        self.state.update(changes, updated_at=time.time())
        write_json_atomic(self.state_path, self.state)

    def _fork_from_zygote(self):
        """Fork the runtime from the forkserver when there is one (saves the torch/transformers import)."""
        module = split_module_command(self.command)
        if not self.forkserver or module is None or not os.path.exists(self.forkserver):
            return None
        from worker.providers.forkserver import ForkedChild

        try:
            return ForkedChild.spawn(self.forkserver, module=module[0], argv=module[1], env=self.env,
                                     log_path=str(self.log_path), watch_pid=os.getpid())
        except (OSError, ValueError, KeyError) as exc:
            self.log(f"forkserver unavailable ({exc}); starting a fresh process")
            return None

    def start_child(self) -> bool:
        """Start the runtime; False (the error logged and kept as `last_error`) when it cannot even be started."""
        forked = self._fork_from_zygote()
        if forked is not None:
            self.child = forked
            self.save(child_pid=forked.pid, phase="Starting", ready=False, child_started_at=time.time(),
                      last_error=None)
            self.log(f"started runtime pid {forked.pid} (forked from the forkserver)")
            return True
        log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self.child = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent, close_fds=True,
            )
        except OSError as exc:
            self.child = None
            error = f"could not start the runtime: {exc.strerror or exc}"
            self.log(error)
            self.save(last_error=error)
            return False
        finally:
            os.close(log)
        self.save(child_pid=self.child.pid, phase="Starting", ready=False, child_started_at=time.time(),
                  last_error=None)
        self.log(f"started runtime pid {self.child.pid}")
        return True

    def stop_child(self, grace: float = 10.0) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        started = self.start_child()
        restart_at: float | None = None
        while not self.stopping:
            if self.owner_pid and not pid_alive(self.owner_pid):
                self.log(f"owner process {self.owner_pid} is gone; stopping")
                break
            if restart_at is not None:
                if time.time() >= restart_at:
                    restart_at = None
                    started = self.start_child()
                else:
                    time.sleep(0.2)
                    continue
            child = self.child
            code = child.poll() if child and started else None
            # A runtime that could not be started fails like one that exited at once (with no exit code).
            if code is not None or not started:
                if started:
                    self.log(f"runtime exited with code {code}")
                started = True
                # A replica that served before starts a fresh count: one crash is not a crash loop.
                failures = 1 if self.state["ever_ready"] else self.state["consecutive_failures"] + 1
                if failures >= self.max_failures:
                    self.save(phase="Failed", ready=False, child_pid=None, last_exit_code=code,
                              last_exit_at=time.time(), consecutive_failures=failures)
                    self.log(f"giving up after {failures} consecutive failures")
                    # Stay alive (idle) so the provider sees a live supervisor in phase Failed rather than a vanished
                    # one it would restart; the reconciler decides what happens next.
                    while not self.stopping and not (self.owner_pid and not pid_alive(self.owner_pid)):
                        time.sleep(0.5)
                    break
                delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, failures - 1))
                self.save(phase="Backoff", ready=False, child_pid=None, last_exit_code=code, last_exit_at=time.time(),
                          restarts=self.state["restarts"] + 1, consecutive_failures=failures, ever_ready=False,
                          next_restart_at=time.time() + delay)
                restart_at = time.time() + delay
                continue
            if (not self.state["ever_ready"] and self.startup_timeout
                    and time.time() - self.state.get("child_started_at", time.time()) > self.startup_timeout):
                # Like a startupProbe's deadline: a replica that never becomes ready is restarted (and counted).
                self.log(f"not ready after {self.startup_timeout:g}s; restarting it")
                self.stop_child(grace=5.0)
                continue
            ready = probe(self.health_url)
            if ready != self.state["ready"] or (ready and self.state["phase"] != "Running"):
                changes = {"ready": ready, "phase": "Running" if ready else self.state["phase"]}
                if ready:
                    changes.update(ever_ready=True, served_before=True, consecutive_failures=0)
                    self.log("health check passed; replica is ready")
                else:
                    self.log("health check failing")
                self.save(**changes)
            time.sleep(1.0 if self.state["ready"] else 0.25)
        self.stop_child()
        self.save(phase="Stopped", ready=False, child_pid=None)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_replica")
    parser.add_argument("--state", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--health-url", required=True)
    parser.add_argument("--owner-pid", type=int, default=None)
    parser.add_argument("--max-failures", type=int, default=3)
    parser.add_argument("--startup-timeout", type=float, default=900.0,
                        help="seconds a replica may take to become ready before it is restarted (0 = no limit)")
    parser.add_argument("--forkserver", default=None, help="Unix socket of a zygote to fork the runtime from")
    args = parser.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    try:
        launch = json.loads(sys.stdin.buffer.read())
        if not launch.get("command") or not isinstance(launch.get("env"), dict):
            raise ValueError("it needs a command and an env")
    except (OSError, ValueError, AttributeError) as exc:
        parser.error(f"stdin must hold the runtime's launch document: {exc}")
    return Supervisor(args, launch).run()


if __name__ == "__main__":
    sys.exit(main())
