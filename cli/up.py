"""`endpointctl up`: the whole embedded stack in the foreground — API + gateway, Celery worker + beat.

The embedded default needs no servers: SQLite in the data directory, kombu's SQLAlchemy transport as the broker,
the local provider for replicas. With DATABASE_URL / REDIS_URL set, the same command drives PostgreSQL and Redis.
This process supervises its children (a crashed API or worker is restarted) and owns the replicas: they watch
its pid and stop when it is gone, and SIGINT/SIGTERM stop everything, replicas included.

The data directory holds the database (tenant secrets, registry passwords), the keys, the admin token and the logs, so
it is the stack user's alone: the directory 0700, and every child runs with umask 077, so files created later are
0600. The forkserver, whose environment every forked replica shows as its own, starts from an allow-list, not the
stack's.

Two stacks on one machine must never break each other. A data directory belongs to one stack: `start` takes an
exclusive `flock` on `up.lock` in it (held for the process's life, released by the kernel when it dies, with the
holder's pid written inside for the message the next one prints), before it touches anything there — a second stack
on the same directory would run a second worker over the same endpoints and replicas. The port is checked before any
child starts, and an API that exits because its port was taken is reported, never restarted in a loop. The admin
token lives in `admin-token` (0600) in the data directory, is reused by the next `up` there, and is printed only to a
terminal, so it reaches neither shell history nor a redirected log.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import socket
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


LOCK_FILE = "up.lock"
TOKEN_FILE = "admin-token"


class StackError(RuntimeError):
    """The stack cannot start or keep running; the message is the one line `up` prints."""


class DataDirInUse(StackError):
    pass


class PortInUse(StackError):
    pass


def _bind_error(text: str) -> bool:
    return "address already in use" in text.lower() or "[errno 98]" in text.lower()


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
    log_offset: int = 0

    def start(self, env: dict[str, str]) -> None:
        try:
            self.log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        logfile = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # PDEATHSIG: if `up` itself is SIGKILLed, its API, worker and forkserver go with it (replicas watch its pid).
        try:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=logfile, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, umask=PRIVATE_UMASK)
        finally:
            os.close(logfile)
        self.started_at = time.monotonic()

    def last_words(self) -> str:
        """Why this run of the child exited, as it logged it: its last error line, else its last line (uvicorn
        logs "Application shutdown complete." after the bind error that made it stop)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(self.log_offset, self.log_path.stat().st_size - 8192))
                lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
        except OSError:
            return ""
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or [""])[-1]

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


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory for this process (see the module docstring); the returned descriptor holds the lock."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(f"the data directory {data_dir} is in use by another endpointctl up (pid {holder}); "
                           f"stop it (endpointctl down --data-dir {data_dir}) or pass another --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def data_dir_holder(data_dir: Path) -> int | None:
    """The pid of the `up` holding `data_dir`, or None when no process holds it."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)
    return None


def check_port_free(host: str, port: int) -> None:
    """Fail before any child starts when something already listens on host:port (uvicorn would exit in the API
    child, far from the user's eyes). SO_REUSEADDR as uvicorn sets it, so a port in TIME_WAIT still counts as free."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StackError(f"cannot bind --host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PortInUse(f"port {port} on {host} is already in use ({exc.strerror}); "
                            f"stop what listens there or pass another --port") from exc


def pick_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0, *, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = child.last_words() if child is not None else ""
            if child is not None and _bind_error(why):
                raise PortInUse(f"the API could not listen on {url}: {why}")
            raise StackError(f"the API exited with code {proc.returncode} during start-up"
                             + (f": {why} (see {child.log_path})" if why else ""))
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"the API did not become ready at {url} within {timeout:g}s")


class Stack:
    """The supervised children of `endpointctl up`; usable from code (the demo, tests) as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None,
                 admin_token: str | None = None, worker_concurrency: int = 4,
                 extra_env: dict[str, str] | None = None) -> None:
        from common.config import Settings

        self.host, self.port = host, port or pick_free_port(host)
        self.data_dir = Path(data_dir or Settings().data_dir).expanduser().resolve()
        make_private(self.data_dir)
        self.token_file = self.data_dir / TOKEN_FILE
        kept = self._kept_token()
        self.generated_token = not (admin_token or os.environ.get("ENDPOINTCTL_ADMIN_TOKEN") or kept)
        self.admin_token = (admin_token or os.environ.get("ENDPOINTCTL_ADMIN_TOKEN") or kept
                            or ("epc_" + secrets.token_urlsafe(32)))
        port = self.port
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
        self._lock_fd: int | None = None

    def _kept_token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def start(self) -> None:
        self._lock_fd = lock_data_dir(self.data_dir)
        check_port_free(self.host, self.port)
        if self._kept_token() != self.admin_token:
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.admin_token + "\n")
        if self.forkserver is not None:
            self.forkserver.start(self.forkserver_env())
        self.api.start(self.env)
        wait_ready(self.url, self.api.proc, child=self.api)
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
                why = child.last_words()
                if _bind_error(why):
                    # Restarting cannot help: something else took the port (or the worker's) meanwhile.
                    raise PortInUse(f"{child.name} exited: {why}")
                child.history = [t for t in child.history if now - t < 60] + [now]
                if len(child.history) > 5:
                    raise StackError(f"{child.name} keeps exiting (code {child.proc.returncode}); see {child.log_path}")
                delay = min(10.0, 0.5 * 2 ** (len(child.history) - 1))
                log.warning("%s exited with code %s; restarting in %.1fs", child.name, child.proc.returncode, delay)
                child.next_start = now + delay
            elif now >= child.next_start:
                child.next_start = 0.0
                child.restarts += 1
                child.start(self.forkserver_env() if child is self.forkserver else self.env)

    def stop(self) -> None:
        if self._lock_fd is None:
            return  # never started (or the data directory is another stack's): nothing here is ours to stop
        self._stopping = True
        # Beat and worker first (no new replicas get started), then the replicas, then the API.
        self.beat.stop()
        self.worker.stop()
        from worker.providers.local import LocalProvider

        LocalProvider(self.data_dir).shutdown_all()
        self.api.stop()
        if self.forkserver is not None:
            self.forkserver.stop()
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


def _announce(console, *, url: str, data_dir: Path, token_file: Path, token: str | None) -> None:
    """What a new user needs after `up`: where the stack is, how to open it, the admin token, how to stop it.

    `token` is given only when this start generated it, and is printed only to a terminal: a redirected stderr is a
    log file, and the token's home is the 0600 file."""
    from cli.config import local_stack_path

    console.print(f"[bold green]endpointctl is up[/bold green] at [bold]{url}[/bold]  (data: {data_dir})")
    console.print(f"  dashboard: {url}/ui/    API docs: {url}/docs", markup=False)
    if token and sys.stderr.isatty():  # not rich's is_terminal, which FORCE_COLOR and the like can turn on
        console.print(f"  admin token (shown once, kept in {token_file}): [bold]{token}[/bold]")
    else:
        console.print(f"  admin token: in {token_file} (0600; printed only to a terminal)", markup=False)
    console.print(f"  other endpointctl commands on this machine use this stack by themselves ({local_stack_path()}); "
                  f"logs in {data_dir / 'logs'}", markup=False)


def up(host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None) -> int:
    console = _console()
    try:
        stack = Stack(host=host, port=port, data_dir=data_dir)
    except OSError as exc:
        console.print(f"error: cannot use the data directory: {exc}", markup=False)
        return 1
    stop_requested = False

    def on_signal(signum, _frame) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with console.status("starting the control plane…"):
        try:
            stack.start()
        except StackError as exc:
            stack.stop()
            console.print(f"error: {exc}", markup=False)
            return 1
    from cli.config import forget_local_stack, record_local_stack

    key = str(stack.data_dir)
    record_local_stack(stack.url, key=key, token_file=stack.token_file, pid=os.getpid())
    _announce(console, url=stack.url, data_dir=stack.data_dir, token_file=stack.token_file,
              token=stack.admin_token if stack.generated_token else None)
    console.print(f"press Ctrl-C to stop everything (replicas included), or run: endpointctl down --data-dir {key}",
                  markup=False)
    code = 0
    try:
        while not stop_requested:
            stack.supervise_once()
            time.sleep(0.25)
    except StackError as exc:
        console.print(f"error: {exc}", markup=False)
        code = 1
    with console.status("stopping…"):
        forget_local_stack(key)
        stack.stop()
    console.print("stopped")
    return code


def up_detached(host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None, *,
                timeout: float = 180.0) -> int:
    """`up --detach`: run `up` in its own session with its output in logs/up.log, and return once it is ready (the
    stack's record appears) or say in one line why it is not."""
    from common.config import Settings

    from cli.config import local_stacks

    console = _console()
    data_dir = Path(data_dir or Settings().data_dir).expanduser().resolve()
    make_private(data_dir)
    if (holder := data_dir_holder(data_dir)) is not None:
        console.print(f"error: the data directory {data_dir} is in use by another endpointctl up (pid {holder}); "
                      f"stop it (endpointctl down --data-dir {data_dir}) or pass another --data-dir", markup=False)
        return 1
    token_file = data_dir / TOKEN_FILE
    fresh_token = not token_file.exists() and not os.environ.get("ENDPOINTCTL_ADMIN_TOKEN")
    (data_dir / "logs").mkdir(mode=0o700, exist_ok=True)
    log_path = data_dir / "logs" / "up.log"
    logfile = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    offset = os.lseek(logfile, 0, os.SEEK_END)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--host", host, "--port", str(port),
                                 "--data-dir", str(data_dir)], stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=subprocess.STDOUT, start_new_session=True, umask=PRIVATE_UMASK)
    finally:
        os.close(logfile)
    deadline = time.monotonic() + timeout
    with console.status("starting the control plane…"):
        while True:
            record = next((r for r in local_stacks() if r["key"] == str(data_dir) and r.get("pid") == proc.pid), None)
            if record is not None:
                break
            if proc.poll() is not None:
                with log_path.open("rb") as handle:
                    handle.seek(offset)
                    lines = [ln for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
                why = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
                console.print(why if why.startswith("error:") else
                              f"error: endpointctl up exited with code {proc.returncode}: {why} (see {log_path})",
                              markup=False)
                return 1
            if time.monotonic() > deadline:
                console.print(f"error: endpointctl up was not ready within {timeout:g}s; it keeps starting "
                              f"(pid {proc.pid}, log {log_path})", markup=False)
                return 1
            time.sleep(0.2)
    token = None
    if fresh_token:
        try:
            token = token_file.read_text().strip()
        except OSError:
            token = None
    _announce(console, url=record["url"], data_dir=data_dir, token_file=token_file, token=token)
    console.print(f"running in the background (pid {proc.pid}, log {log_path}); stop it with: "
                  f"endpointctl down --data-dir {data_dir}", markup=False)
    return 0


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its parent to reap it has finished)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def down(data_dir: Path | None = None, *, timeout: float = 90.0) -> int:
    """Stop the `up` holding `data_dir` the way Ctrl-C does (SIGTERM), and return once it has let go of it."""
    from common.config import Settings

    console = _console()
    data_dir = Path(data_dir or Settings().data_dir).expanduser().resolve()
    pid = data_dir_holder(data_dir)
    if pid is None:
        console.print(f"nothing to stop: no endpointctl up runs on {data_dir}", markup=False)
        return 0
    if not pid:
        console.print(f"error: {data_dir} is locked but its lock file names no pid; stop that process yourself",
                      markup=False)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        console.print(f"error: endpointctl up on {data_dir} (pid {pid}) belongs to another user", markup=False)
        return 1
    deadline = time.monotonic() + timeout
    with console.status(f"stopping endpointctl up (pid {pid})…"):
        while data_dir_holder(data_dir) is not None or _running(pid):
            if time.monotonic() > deadline:
                console.print(f"error: endpointctl up (pid {pid}) still holds {data_dir} after {timeout:g}s",
                              markup=False)
                return 1
            time.sleep(0.2)
    console.print(f"stopped endpointctl up on {data_dir}", markup=False)
    return 0
