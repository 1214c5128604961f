"""Rendering: rich tables for people, JSON/YAML for machines (stdout only; messages and spinners go to stderr).

Machine formats print the API's objects as received (minus nothing: the API already never returns secrets), so a
script can pipe `endpointctl -o json describe x` into jq and see the same fields huggingface_hub reads.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


# Non-terminals (pipes, CI logs) get a wide fixed width so tables are not folded into unreadable columns.
out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200, highlight=False)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

STATE_STYLES = {
    "running": "green",
    "pending": "yellow",
    "initializing": "yellow",
    "updating": "yellow",
    "scaledToZero": "cyan",
    "paused": "blue",
    "failed": "red",
    "updateFailed": "red",
}


def state_text(state: str | None) -> Text:
    state = state or "unknown"
    return Text(state, style=STATE_STYLES.get(state, ""))


def emit_data(data: Any, fmt: OutputFormat) -> None:
    """JSON or YAML of `data` on stdout, unstyled."""
    if fmt is OutputFormat.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> Table:
    tbl = Table(title=title, box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        tbl.add_column(column, overflow="fold")
    for row in rows:
        tbl.add_row(*[cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row])
    return tbl


def message(text: str) -> None:
    """A human note on stderr (so stdout stays clean for the data)."""
    err.print(text, markup=False)


# -- endpoint views ------------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def replicas(endpoint: dict[str, Any]) -> str:
    ready, target = _get(endpoint, "status", "readyReplica"), _get(endpoint, "status", "targetReplica")
    if ready is None and target is None:
        return ""
    return f"{ready if ready is not None else '?'}/{target if target is not None else '?'}"


ENDPOINT_COLUMNS = ("NAME", "MODEL", "STATUS", "REPLICAS", "TASK", "FRAMEWORK", "INSTANCE", "VENDOR", "REGION", "URL")


def endpoint_row(ep: dict[str, Any]) -> list[Any]:
    instance_type, instance_size = _get(ep, "compute", "instanceType"), _get(ep, "compute", "instanceSize")
    instance = f"{instance_type}-{instance_size}" if instance_type and instance_size else (instance_type or "")
    return [
        ep.get("name"),
        _get(ep, "model", "repository"),
        state_text(_get(ep, "status", "state")),
        replicas(ep),
        _get(ep, "model", "task"),
        _get(ep, "model", "framework"),
        instance,
        _get(ep, "provider", "vendor"),
        _get(ep, "provider", "region"),
        _get(ep, "status", "url"),
    ]


def show_items(items: Sequence[Any], fmt: OutputFormat, *, columns: Sequence[str], row: Callable[[Any], Sequence[Any]],
               empty: str, data: Any = None) -> None:
    """How every listing verb shows its list: the data as received for machines (`{"items": ...}` unless `data`
    says otherwise), a table for people, or one line on stderr when there is nothing."""
    if fmt is not OutputFormat.table:
        emit_data({"items": list(items)} if data is None else data, fmt)
        return
    if not items:
        message(empty)
        return
    out.print(table(columns, (row(item) for item in items)))


def show_endpoints(endpoints: list[dict[str, Any]], fmt: OutputFormat) -> None:
    show_items(endpoints, fmt, columns=ENDPOINT_COLUMNS, row=endpoint_row, empty="no endpoints")


def show_endpoint(ep: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is not OutputFormat.table:
        emit_data(ep, fmt)
        return
    image = _get(ep, "model", "image") or {}
    image_kind = next(iter(image), "") if isinstance(image, dict) else ""
    image_url = _get(image, image_kind, "url") if image_kind else None
    scaling = _get(ep, "compute", "scaling") or {}
    created_by = _get(ep, "status", "createdBy")
    rows: list[tuple[str, Any]] = [
        ("Name", ep.get("name")),
        ("Type", ep.get("type")),
        ("State", state_text(_get(ep, "status", "state"))),
        ("Desired", _desired(ep)),
        ("Message", _get(ep, "status", "message")),
        ("URL", _get(ep, "status", "url")),
        ("Replicas (ready/target)", replicas(ep)),
        ("Repository", _get(ep, "model", "repository")),
        ("Revision", _get(ep, "model", "revision")),
        ("Framework", _get(ep, "model", "framework")),
        ("Task", _get(ep, "model", "task")),
        ("Image", f"{image_kind} {image_url}" if image_url else image_kind),
        ("Health route", ep.get("healthRoute")),
        ("Accelerator", _get(ep, "compute", "accelerator")),
        ("Instance", f"{_get(ep, 'compute', 'instanceType')} {_get(ep, 'compute', 'instanceSize')}"),
        ("Provider", f"{_get(ep, 'provider', 'vendor')} / {_get(ep, 'provider', 'region')}"),
        ("Min/max replicas", f"{scaling.get('minReplica')} / {scaling.get('maxReplica')}"),
        ("Autoscale on", ", ".join(f"{k} {v if v is not None else '(default)'}" for k, v in (scaling.get("measure") or {}).items())),
        ("Scale to zero after", f"{scaling['scaleToZeroTimeout']} min" if scaling.get("scaleToZeroTimeout") is not None else "never"),
        ("Env", ", ".join(f"{k}={v}" for k, v in (_get(ep, "model", "env") or {}).items())),
        ("Tags", ", ".join(ep.get("tags") or [])),
        ("Created", f"{_get(ep, 'status', 'createdAt')}" + (f" by {created_by.get('name')}" if isinstance(created_by, dict) and created_by.get("name") else "")),
        ("Updated", _get(ep, "status", "updatedAt")),
    ]
    tbl = Table(box=None, show_header=False, pad_edge=False)
    tbl.add_column(style="bold")
    tbl.add_column(overflow="fold")
    for label, value in rows:
        if value in (None, ""):
            continue
        tbl.add_row(label, value if isinstance(value, Text) else Text(str(value)))
    out.print(tbl)
    conditions = _get(ep, "status", "conditions") or []
    if conditions:
        out.print(table(("CONDITION", "STATUS", "REASON", "MESSAGE", "SINCE"),
                        [[c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime")]
                         for c in conditions if isinstance(c, dict)]))


def _desired(ep: dict[str, Any]) -> str | None:
    """What was last asked for, shown only while the worker has not caught up (it explains a lagging state)."""
    status = ep.get("status") or {}
    desired, state = status.get("desiredState"), status.get("state")
    generation, observed = status.get("generation"), status.get("observedGeneration")
    behind = generation is not None and observed is not None and observed < generation
    if desired and (desired != state or behind):
        return f"{desired}" + (f" (generation {generation}, worker has seen {observed})" if behind else "")
    return None
