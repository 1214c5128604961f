"""Rendering: rich tables for people, JSON/YAML for machines (stdout only; messages and spinners go to stderr).

Machine formats print the API's objects as received (minus nothing: the API already never returns secrets), so a
script can pipe `endpointctl -o json describe x` into jq and see the same fields huggingface_hub reads.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class OutputFormat(str, enum.Enum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"

    @property
    def machine(self) -> bool:
        """JSON or YAML: the API's objects as received; `table` and `wide` are for people."""
        return self in (OutputFormat.json, OutputFormat.yaml)


def terminal_width(stream: Any = None) -> int | None:
    """The width tables must fit: `COLUMNS` when set (as kubectl and less honour it), else the terminal's; None
    for a pipe, where a table is printed whole (cut or wrapped, a line would break scripts reading it)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = stream or sys.stdout
    if stream.isatty():
        return shutil.get_terminal_size().columns
    return None


# A pipe gets a console wide enough that rich never folds a line; tables are sized by `fit` beforehand.
_UNBOUNDED = 100_000
out = Console(soft_wrap=False, width=terminal_width() or _UNBOUNDED, highlight=False)
err = Console(stderr=True, highlight=False, width=terminal_width(sys.stderr) or 200)

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


@dataclass(frozen=True)
class Column:
    """A table column. `optional` columns are dropped, last first, when the table does not fit; `keep` columns
    (names, states) are never cut; the others are cut with "…" from the widest down, as `kubectl get` does."""

    header: str
    optional: bool = False
    keep: bool = False


GAP = 2  # spaces between columns
MIN_CUT = 6  # a cut cell keeps at least this many characters (and never less than its header)


def _cell(value: Any) -> Text:
    text = value if isinstance(value, Text) else Text("" if value is None else str(value))
    if "\n" in text.plain:
        # One line per row: a multi-line value (an old traceback in a message) shows its first line.
        text = Text(text.plain.splitlines()[0] + " …", style=text.style)
    return text


def fit(columns: Sequence[str | Column], rows: Iterable[Sequence[Any]], *, width: int | None) -> Table:
    """A table of one line per row that fits `width` (None: as wide as it needs): optional columns are dropped,
    then cells cut with "…" — never folded onto several lines."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c.header)] + [t.cell_len for t in (r[i] for r in cells)]) for i, c in enumerate(cols)]
    shown = list(range(len(cols)))

    def total() -> int:
        return sum(widths[i] for i in shown) + GAP * (len(shown) - 1)

    if width is not None:
        for i in reversed(range(len(cols))):
            if total() <= width:
                break
            if cols[i].optional:
                shown.remove(i)
        while total() > width:
            cuttable = [i for i in shown if not cols[i].keep and widths[i] > max(MIN_CUT, len(cols[i].header))]
            if not cuttable:
                break  # even cut to the bone it is wider: rich cuts further rather than fold
            widest = max(cuttable, key=lambda i: widths[i])
            widths[widest] -= 1
    tbl = Table(box=None, header_style="bold", pad_edge=False, show_edge=False, padding=(0, GAP // 2))
    for i in shown:
        tbl.add_column(cols[i].header, width=widths[i], no_wrap=True, overflow="ellipsis")
    for row in cells:
        tbl.add_row(*[row[i] for i in shown])
    return tbl


def table(columns: Sequence[str | Column], rows: Iterable[Sequence[Any]], *, wide: bool = False) -> Table:
    """A fitted table for `out` (wide: every column, whole cells)."""
    return fit(columns, rows, width=None if wide else terminal_width())


def print_table(tbl: Table) -> None:
    """Print a table `fit` sized: at its own width (a wide one runs past the terminal, as `kubectl -o wide` does,
    rather than be folded by rich)."""
    if out.width >= _UNBOUNDED:
        out.print(tbl)
        return
    # rich caps a print at the console's width; a table already sized by `fit` gets a console without that cap.
    Console(width=_UNBOUNDED, soft_wrap=False, highlight=False, force_terminal=out.is_terminal,
            no_color=out.no_color).print(tbl, crop=False)


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


# `list` shows these by default (URL and INSTANCE go first when the terminal is narrow); `-o wide` adds the rest.
ENDPOINT_COLUMNS = (Column("NAME", keep=True), Column("STATUS", keep=True), Column("REPLICAS", keep=True),
                    Column("MODEL"), Column("INSTANCE", optional=True), Column("URL", optional=True))
WIDE_ENDPOINT_COLUMNS = ("NAME", "STATUS", "REPLICAS", "MODEL", "TASK", "FRAMEWORK", "INSTANCE", "VENDOR", "REGION",
                         "URL")


def endpoint_row(ep: dict[str, Any], *, wide: bool = False) -> list[Any]:
    instance_type, instance_size = _get(ep, "compute", "instanceType"), _get(ep, "compute", "instanceSize")
    instance = f"{instance_type}-{instance_size}" if instance_type and instance_size else (instance_type or "")
    head = [ep.get("name"), state_text(_get(ep, "status", "state")), replicas(ep), _get(ep, "model", "repository")]
    if not wide:
        return [*head, instance, _get(ep, "status", "url")]
    return [*head, _get(ep, "model", "task"), _get(ep, "model", "framework"), instance,
            _get(ep, "provider", "vendor"), _get(ep, "provider", "region"), _get(ep, "status", "url")]


def show_items(items: Sequence[Any], fmt: OutputFormat, *, columns: Sequence[str], row: Callable[[Any], Sequence[Any]],
               empty: str, data: Any = None) -> None:
    """How every listing verb shows its list: the data as received for machines (`{"items": ...}` unless `data`
    says otherwise), a table for people, or one line on stderr when there is nothing."""
    if fmt.machine:
        emit_data({"items": list(items)} if data is None else data, fmt)
        return
    if not items:
        message(empty)
        return
    print_table(table(columns, (row(item) for item in items), wide=fmt is OutputFormat.wide))


def show_endpoints(endpoints: list[dict[str, Any]], fmt: OutputFormat, *, all_namespaces: bool = False) -> None:
    """`list`: short columns fitted to the terminal; `-o wide` every column; `-A` a NAMESPACE column first."""
    wide = fmt is OutputFormat.wide
    columns: list[str | Column] = list(WIDE_ENDPOINT_COLUMNS if wide else ENDPOINT_COLUMNS)
    if all_namespaces:
        columns.insert(0, Column("NAMESPACE", keep=True))

    def row(ep: dict[str, Any]) -> list[Any]:
        cells = endpoint_row(ep, wide=wide)
        return [ep.get("namespace"), *cells] if all_namespaces else cells

    show_items(endpoints, fmt, columns=columns, row=row, empty="no endpoints")


EVENT_COLUMNS = (Column("TIME", keep=True), Column("TYPE", keep=True), Column("REASON", keep=True), Column("MESSAGE"))


def event_row(ev: dict[str, Any]) -> list[Any]:
    return [ev.get("createdAt") or ev.get("timestamp") or ev.get("time"), ev.get("type") or ev.get("kind"),
            ev.get("reason"), ev.get("message")]


def show_endpoint(ep: dict[str, Any], fmt: OutputFormat, *, events: Sequence[dict[str, Any]] | None = None,
                  machine: str | None = None) -> None:
    """`describe`: the endpoint's fields, its conditions, then (as `kubectl describe`) its recent events.

    `machine` names the host when the provider runs everything locally: the spec's vendor and region are then only
    what was asked for, and saying "aws / us-east-1" alone would claim a cloud that is not there."""
    if fmt.machine:
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
        ("Provider", f"{_get(ep, 'provider', 'vendor')} / {_get(ep, 'provider', 'region')}"
                     + (f" — runs on {machine}" if machine else "")),
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
    wide = fmt is OutputFormat.wide
    conditions = _get(ep, "status", "conditions") or []
    if conditions:
        out.print()
        print_table(table((Column("CONDITION", keep=True), Column("STATUS", keep=True), Column("REASON", keep=True),
                         Column("MESSAGE"), Column("SINCE", optional=True)),
                        [[c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime")]
                         for c in conditions if isinstance(c, dict)], wide=wide))
    if events is not None:
        out.print()
        if events:
            out.print("Events (newest first):", markup=False, highlight=False)
            print_table(table(EVENT_COLUMNS, (event_row(ev) for ev in events), wide=wide))
        else:
            out.print("Events: none", markup=False, highlight=False)


def _desired(ep: dict[str, Any]) -> str | None:
    """What was last asked for, shown only while the worker has not caught up (it explains a lagging state)."""
    status = ep.get("status") or {}
    desired, state = status.get("desiredState"), status.get("state")
    generation, observed = status.get("generation"), status.get("observedGeneration")
    behind = generation is not None and observed is not None and observed < generation
    if desired and (desired != state or behind):
        return f"{desired}" + (f" (generation {generation}, worker has seen {observed})" if behind else "")
    return None
