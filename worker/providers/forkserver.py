"""A zygote for local replicas: imports torch and transformers once, then forks a ready-to-run runtime per replica.

Why: a fresh runtime process spends seconds importing torch and transformers before it even looks at the model,
and that is most of a scale-from-zero wake on a small model. The zygote pays it once when `endpointctl up`
starts; each replica is a fork that inherits the imported modules (copy-on-write) and only loads its model.

Safety: the zygote only imports modules; it never runs a torch op, so no thread pools exist to be broken by fork,
and CUDA is initialised in the child only. Environment variables read at import time by torch/transformers come
from the zygote's own environment, which `endpointctl up` builds from an allow-list (`procenv.host_env`): a forked
replica keeps that block as its `/proc/<pid>/environ`, so it must hold nothing of the control plane's. Everything
the runtime reads at start-up comes from the replica's own env, which replaces `os.environ` in the child.

Protocol (one Unix socket connection per replica, JSON lines): the supervisor sends
{"module", "argv", "env", "cwd", "log", "watch_pid"}; the zygote answers {"pid"} at once and {"exit": code} when the
child exits. The child stops by itself when the supervisor (`watch_pid`) dies, like PR_SET_PDEATHSIG would.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator

from worker.providers.procenv import PRIVATE_UMASK

log = logging.getLogger("endpointctl.forkserver")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _set_process_name(name: bytes) -> None:
    """A forked replica keeps the forkserver's command line; at least give it its own name in ps/top."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except OSError:
        pass


def _child_main(request: dict, inherited_fds: list[int]) -> None:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        os.setsid()
        for fd in inherited_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        _set_process_name(b"epc-replica")
        if request.get("cwd"):
            os.chdir(request["cwd"])
        watch = request.get("watch_pid")
        if watch:
            def watchdog() -> None:
                while _pid_alive(watch):
                    time.sleep(0.5)
                os._exit(137)

            threading.Thread(target=watchdog, daemon=True, name="supervisor-watchdog").start()
        sys.argv = [request["module"], *request.get("argv", [])]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - whatever the runtime raised ends the replica with a traceback in its log
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


@contextlib.contextmanager
def short_unix_address(path: str) -> Iterator[str]:
    """An AF_UNIX address holds about 107 bytes, and a data directory deep in a home or a temporary directory is
    longer: the same socket file is reached through an O_PATH descriptor of its directory under /proc/self/fd."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


class Zygote:
    def __init__(self, path: str, owner_pid: int | None) -> None:
        self.path = path
        self.owner_pid = owner_pid
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.stopping = False

    def serve(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with short_unix_address(self.path) as address:
            listener.bind(address)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        log.info("forkserver ready at %s", self.path)
        while not self.stopping:
            if self.owner_pid and not _pid_alive(self.owner_pid):
                log.info("owner %s is gone; exiting", self.owner_pid)
                break
            for key, _ in self.selector.select(timeout=0.2):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    self.selector.register(conn, selectors.EVENT_READ, "request")
                else:
                    self._handle(key.fileobj)
            self._reap()
        listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _handle(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        try:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    conn.close()
                    return
                data += chunk
            request = json.loads(data)
        except (OSError, ValueError) as exc:
            log.warning("bad request: %s", exc)
            conn.close()
            return
        inherited = [key.fileobj.fileno() for key in self.selector.get_map().values()] + [conn.fileno()]
        pid = os.fork()
        if pid == 0:
            _child_main(request, inherited)
        self.children[pid] = conn
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            pass
        log.info("forked %s for %s", pid, request.get("env", {}).get("ENDPOINTCTL_REPLICA", "?"))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                conn.close()


class ForkedChild:
    """The supervisor's handle on a zygote-forked runtime, shaped like the parts of Popen it uses."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.returncode: int | None = None
        self._buffer = b""
        conn.setblocking(False)

    @classmethod
    def spawn(cls, socket_path: str, *, module: str, argv: list[str], env: dict[str, str], log_path: str,
              watch_pid: int, timeout: float = 10.0) -> ForkedChild:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        with short_unix_address(socket_path) as address:
            conn.connect(address)
        conn.sendall(json.dumps({"module": module, "argv": argv, "env": env, "cwd": os.getcwd(), "log": log_path,
                                 "watch_pid": watch_pid}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise OSError("forkserver closed the connection")
            data += chunk
        return cls(conn, json.loads(data)["pid"])

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            chunk = self.conn.recv(4096)
            if chunk:
                self._buffer += chunk
                if self._buffer.endswith(b"\n"):
                    self.returncode = int(json.loads(self._buffer.splitlines()[-1])["exit"])
            else:  # the zygote went away; fall back to watching the pid
                if not _pid_alive(self.pid):
                    self.returncode = -1
        except BlockingIOError:
            pass
        except OSError:
            if not _pid_alive(self.pid):
                self.returncode = -1
        if self.returncode is not None:
            self.conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.providers.forkserver")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--preload", default="torch,transformers")
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    for name in filter(None, (m.strip() for m in args.preload.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("could not preload %s: %s", name, exc)
    log.info("preloaded %s in %.1fs", args.preload, time.monotonic() - started)
    Zygote(args.socket, args.owner_pid).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
