"""Launching the runtime: ``python -m runtime`` and ``endpointctl runtime serve`` call :func:`main`, which reads
the settings (TGI's env vars or the matching flags) and serves :func:`runtime.app.create_app` with uvicorn.

SIGTERM/SIGINT stop uvicorn gracefully (open streams get a few seconds) and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

import uvicorn

from runtime.config import parse_settings

log = logging.getLogger("runtime")


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped; the exit status is 0 after a signal, 2 for invalid settings (a model that cannot load
    exits 3 from the loader thread)."""
    # OpenMP workers that spin while they wait for work take the cores the event loop and other processes need; on
    # a shared CPU a spinning worker that lost its core stalls the whole parallel region, which costs far more than
    # waking workers from a passive sleep. Read once, when torch loads its OpenMP runtime: a process that imported
    # torch before calling this (a fork server) sets it itself; an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from runtime.app import create_app  # imports torch (the routes' guidance does), so only after the line above

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_settings(argv)
    except (ValueError, TypeError) as exc:
        log.error("invalid configuration: %s", _one_line(exc))
        return 2
    app = create_app(settings)
    log.info("listening on http://%s:%d (model %s)", settings.hostname, settings.port, settings.model_id)
    config = uvicorn.Config(
        app,
        host=settings.hostname,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=3,
    )
    _Server(config).run()
    return 0


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown (exit status -15); a supervisor stopping us on
    purpose should see a clean exit 0, so we only ask uvicorn to exit."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _one_line(exc: ValueError | TypeError) -> str:
    """A settings error as the one line the provider quotes in the endpoint's status: pydantic's own text is a
    header, one line per field and a documentation link, and the last of those is what a log tail would show."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return " ".join(str(exc).split())
    parts = []
    for error in errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        shown = f" (got {error['input']!r})" if isinstance(error.get("input"), (str, int, float)) else ""
        parts.append(f"{where}: {error.get('msg', 'invalid')}{shown}")
    return "; ".join(parts) or " ".join(str(exc).split())
