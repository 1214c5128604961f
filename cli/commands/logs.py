"""`logs [-f]`: the replicas' output, as kept by the provider (a file per replica locally, pod logs on Kubernetes)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.app import app
from cli.output import OutputFormat, emit_data
from cli.state import NamespaceOpt, OutputOpt, get_state


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
    name: Annotated[str, typer.Argument(help="Endpoint name.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until interrupted.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", min=0, help="Only the last N lines.")] = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Print an endpoint's replica logs."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    fmt = state.fmt(output)
    if follow:
        try:
            for line in state.client.stream_logs(ns, name, tail=tail, follow="true"):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following; not an error
        return
    body = state.client.logs(ns, name, tail=tail)
    if fmt is not OutputFormat.table:
        emit_data(body if isinstance(body, (dict, list)) else {"logs": body}, fmt)
        return
    lines = _lines(body)
    if tail is not None:
        lines = lines[-tail:] if tail else []
    for line in lines:
        sys.stdout.write(line + "\n")
