"""`logs [-f]`: the replicas' output, as kept by the provider (a file per replica locally, pod logs on Kubernetes)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.app import app
from cli.commands.endpoints import not_found_hint
from cli.errors import CliError
from cli.output import emit_data, message
from cli.state import NamespaceOpt, OutputOpt, get_state
from controlplane.client import EndpointctlHTTPError


def _lines(body: Any) -> list[str]:
    """The log lines out of whichever shape the server sends (plain text, {"logs": ...}, {"items": [...]})."""
    if isinstance(body, str):
        return body.splitlines()
    if isinstance(body, dict):
        for key in ("logs", "items", "lines"):
            if key in body:
                return _lines(body[key])
        return []
    if isinstance(body, list):
        lines: list[str] = []
        for item in body:
            if isinstance(item, dict):
                text = item.get("line") or item.get("message") or item.get("text") or ""
                prefix = f"[{item['replica']}] " if item.get("replica") is not None else ""
                lines.append(prefix + str(text))
            else:
                lines.append(str(item))
        return lines
    return []


@app.command(rich_help_panel="Endpoints")
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Endpoint name.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C (exit 130).")] = False,
    tail: Annotated[int | None, typer.Option("--tail", min=0, max=100_000, help="Only the last N lines of each replica (default 200).")] = None,
    replica: Annotated[str | None, typer.Option("--replica", help="Only this replica (the name in the [..] prefix, e.g. r1-0 or a pod name).")] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="DURATION", help="Only lines of the last DURATION: 30s, 5m, 2h or 1d (of the tail).")] = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Print an endpoint's replica logs (the detail behind a failed state's one-line message)."""
    since_seconds = parse_duration(since) if since is not None else None
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    fmt = state.fmt(output)
    try:
        if follow:
            # Ctrl-C ends it with exit code 130, as for `wait` (cli.main turns KeyboardInterrupt into 130).
            for line in state.client.stream_logs(ns, name, tail=tail, follow="true", replica=replica,
                                                 since=since_seconds):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            return
        body = state.client.logs(ns, name, tail=tail, replica=replica, since=since_seconds)
    except EndpointctlHTTPError as exc:
        hint = not_found_hint(state.client, ns, name, exc)
        raise (hint or exc) from exc
    if fmt.machine:
        emit_data(body if isinstance(body, (dict, list)) else {"logs": body}, fmt)
        return
    lines = _lines(body)
    if tail is not None:
        lines = lines[-tail:] if tail else []
    for line in lines:
        sys.stdout.write(line + "\n")
    if not lines:
        message(_why_empty(state.client.get_endpoint(ns, name)))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`30s`, `5m`, `2h`, `1d` or plain seconds, as `kubectl logs --since` takes them."""
    import re

    found = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text)
    seconds = int(found.group(1)) * _UNITS[found.group(2) or "s"] if found else 0
    if not found or not 1 <= seconds <= 10 * 365 * 86400:
        raise CliError(f"--since {text[:40]!r}: give a duration such as 30s, 5m, 2h or 1d (up to ten years)",
                       exit_code=2)
    return seconds


def _why_empty(ep: dict[str, Any]) -> str:
    """Why there is nothing to show, rather than printing nothing at all."""
    status = ep.get("status") or {}
    state = status.get("state")
    if state == "pending":
        return f"no logs: {ep.get('name')} has not started a replica yet (state: pending" + (
            f" — {status['message']}" if status.get("message") else "") + ")"
    if state in ("paused", "scaledToZero"):
        return f"no logs: {ep.get('name')} is {state}, so no replica runs (the logs of stopped replicas are not kept)"
    return f"no logs yet from {ep.get('name')}'s replicas (state: {state})"
