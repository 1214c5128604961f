"""`endpointctl up`: the whole embedded stack in the foreground — API + gateway, Celery worker + beat.

The embedded default needs no servers: SQLite in the data directory, kombu's SQLAlchemy transport as the broker,
the local provider for replicas. With DATABASE_URL / REDIS_URL set, the same command drives PostgreSQL and Redis.
This process supervises its children (a crashed API or worker is restarted) and owns the replicas: they watch
its pid and stop when it is gone, and SIGINT/SIGTERM stop everything, replicas included.

The data directory holds the database (tenant secrets, registry passwords), the keys and the logs, so it is the
stack user's alone: the directory 0700, and every child runs with umask 077, so files created later are 0600. The
forkserver, whose environment every forked replica shows as its own, starts from an allow-list, not the stack's.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from worker.providers.local_replica import _die_with_parent
from worker.providers.procenv import PRIVATE_UMASK, host_env, python_module_command

log = logging.getLogger("endpointctl.up")

# What the forkserver imports once for every replica: the runtime's own modules and what its model loader pulls in
# lazily (a module missing here only costs its import time in each replica).
DEFAULT_PRELOAD = ",".join([
    "torch", "transformers", "uvicorn", "runtime.app", "runtime.engine.loader", "runtime.openai.routes",
    "runtime.tgi.routes", "transformers.models.llama.modeling_llama", "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto", "safetensors.torch",
])


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        logfile = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # PDEATHSIG: if `up` itself is SIGKILLed, its API, worker and forkserver go with it (replicas watch its pid).
        try:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=logfile, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, umask=PRIVATE_UMASK)
        finally:
            os.close(logfile)
        self.started_at = time.monotonic()

    def stop(self, grace: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stack_env(*, host: str, port: int, data_dir: Path, admin_token: str) -> dict[str, str]:
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    env = dict(os.environ)
    env.update({
        "ENDPOINTCTL_DATA_DIR": str(data_dir),
        "ENDPOINTCTL_PUBLIC_URL": os.environ.get("ENDPOINTCTL_PUBLIC_URL") or f"http://{public_host}:{port}",
        "ENDPOINTCTL_ADMIN_TOKEN": admin_token,
        "ENDPOINTCTL_OWNER_PID": str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def make_private(data_dir: Path) -> None:
    """Create the data directory 0700 and take group/other access from what an older version left readable there
    (its top level and logs; everything deeper is behind the directory's own mode)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in [data_dir, *data_dir.glob("*"), *data_dir.glob("logs/*")]:
        try:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                path.chmod(stat.S_IMODE(mode) & 0o700)
        except OSError as exc:
            log.warning("could not make %s private: %s", path, exc)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with code {proc.returncode} during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not become ready at {url} within {timeout:g}s")


class Stack:
    """The supervised children of `endpointctl up`; usable from code (the demo, tests) as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None,
                 admin_token: str | None = None, worker_concurrency: int = 4,
                 extra_env: dict[str, str] | None = None) -> None:
        from common.config import Settings

        self.host, self.port = host, port
        self.data_dir = Path(data_dir or Settings().data_dir).expanduser().resolve()
        make_private(self.data_dir)
        self.generated_token = admin_token is None and not os.environ.get("ENDPOINTCTL_ADMIN_TOKEN")
        self.admin_token = admin_token or os.environ.get("ENDPOINTCTL_ADMIN_TOKEN") or ("epc_" + secrets.token_urlsafe(32))
        self.env = stack_env(host=host, port=port, data_dir=self.data_dir, admin_token=self.admin_token)
        self.env.update(extra_env or {})
        self.url = self.env["ENDPOINTCTL_PUBLIC_URL"]
        logs = self.data_dir / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        py = sys.executable
        self.api = Child("api", [py, "-m", "controlplane", "--host", host, "--port", str(port)], logs / "api.log")
        self.worker = Child("worker", [py, "-m", "celery", "-A", "worker.celery_app:app", "worker",
                                       "--pool", "threads", "--concurrency", str(worker_concurrency), "-Q", "endpointctl",
                                       "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                                       "--without-heartbeat", "--hostname", f"endpointctl-{os.getpid()}@%h"], logs / "worker.log")
        # Beat in its own process rather than `worker --beat`: the embedded beat is a grandchild that would outlive
        # a killed worker; as our direct child it is supervised and dies with us.
        self.beat = Child("beat", [py, "-m", "celery", "-A", "worker.celery_app:app", "beat", "--loglevel", "INFO",
                                   "--schedule", str(self.data_dir / "celerybeat-schedule")], logs / "beat.log")
        self.children = [self.api, self.worker, self.beat]
        if self.env.get("ENDPOINTCTL_PROVIDER", "local") == "local" and self.env.get("ENDPOINTCTL_FORKSERVER") != "off":
            socket_path = str(self.data_dir / "forkserver.sock")
            self.env["ENDPOINTCTL_FORKSERVER"] = socket_path
            self.forkserver = Child("forkserver", [*python_module_command(py, "worker.providers.forkserver"),
                                                   "--socket", socket_path,
                                                   "--preload", self.env.get("ENDPOINTCTL_FORKSERVER_PRELOAD",
                                                                             DEFAULT_PRELOAD),
                                                   "--owner-pid", str(os.getpid())], logs / "forkserver.log")
            self.children.append(self.forkserver)
        else:
            self.env.pop("ENDPOINTCTL_FORKSERVER", None)
            self.forkserver = None
        self._stopping = False

    def start(self) -> None:
        if self.forkserver is not None:
            self.forkserver.start(self.forkserver_env())
        self.api.start(self.env)
        wait_ready(self.url, self.api.proc)
        self.worker.start(self.env)
        self.beat.start(self.env)

    def forkserver_env(self) -> dict[str, str]:
        """The stack's allow-listed host settings only: a forked replica shows this block as its environ."""
        # libgomp reads this when torch is imported, i.e. in the forkserver, not in the forked runtime's main():
        # passive waiting keeps idle OpenMP threads from spinning on a shared CPU (the runtime sets it too).
        return {**host_env(self.env), "OMP_WAIT_POLICY": self.env.get("OMP_WAIT_POLICY", "PASSIVE")}

    def supervise_once(self) -> None:
        """Restart a child that died, with backoff; give up on one that keeps dying within seconds."""
        now = time.monotonic()
        for child in self.children:
            if self._stopping or child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                child.history = [t for t in child.history if now - t < 60] + [now]
                if len(child.history) > 5:
                    raise RuntimeError(f"{child.name} keeps exiting (code {child.proc.returncode}); see {child.log_path}")
                delay = min(10.0, 0.5 * 2 ** (len(child.history) - 1))
                log.warning("%s exited with code %s; restarting in %.1fs", child.name, child.proc.returncode, delay)
                child.next_start = now + delay
            elif now >= child.next_start:
                child.next_start = 0.0
                child.restarts += 1
                child.start(self.forkserver_env() if child is self.forkserver else self.env)

    def stop(self) -> None:
        self._stopping = True
        # Beat and worker first (no new replicas get started), then the replicas, then the API.
        self.beat.stop()
        self.worker.stop()
        from worker.providers.local import LocalProvider

        LocalProvider(self.data_dir).shutdown_all()
        self.api.stop()
        if self.forkserver is not None:
            self.forkserver.stop()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def up(host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    stack = Stack(host=host, port=port, data_dir=data_dir)
    stop_requested = False

    def on_signal(signum, _frame) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with console.status("starting the control plane…"):
        try:
            stack.start()
        except RuntimeError as exc:
            stack.stop()
            console.print(f"[red]error:[/red] {exc}")
            return 1
    from cli.config import forget_local_stack, record_local_stack

    recorded = record_local_stack(stack.url, stack.admin_token)
    console.print(f"[bold green]endpointctl is up[/bold green] at [bold]{stack.url}[/bold]  (data: {stack.data_dir})")
    if stack.generated_token:
        console.print(f"admin token (shown once): [bold]{stack.admin_token}[/bold]")
    console.print(f"other endpointctl commands find this stack through {recorded}; logs in {stack.data_dir / 'logs'}")
    console.print("press Ctrl-C to stop everything (replicas included)")
    code = 0
    try:
        while not stop_requested:
            stack.supervise_once()
            time.sleep(0.25)
    except RuntimeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        code = 1
    with console.status("stopping…"):
        forget_local_stack()
        stack.stop()
    console.print("stopped")
    return code
