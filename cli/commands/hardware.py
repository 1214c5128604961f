"""`hardware`: the control plane's instance catalog (vendors → regions → computes)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.app import app
from cli.output import Column, message, show_items
from cli.spec import Accelerator
from cli.state import NamespaceOpt, OutputOpt, get_state


def _fmt_num(value: object, suffix: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{suffix}"


@app.command(rich_help_panel="Endpoints")
def hardware(
    ctx: typer.Context,
    vendor: Annotated[str | None, typer.Option("--vendor", help="Only this vendor.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Only this region.")] = None,
    accelerator: Annotated[Accelerator | None, typer.Option("--accelerator", case_sensitive=False, help="Only cpu or gpu.")] = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """List the hardware endpoints can run on (what --vendor/--region/--instance-type/--instance-size accept)."""
    state = get_state(ctx)
    catalog = state.client.hardware(state.resolve_namespace(namespace))
    rows = []
    filtered = []
    for v in catalog.get("vendors") or []:
        if vendor and v.get("name") != vendor:
            continue
        regions = []
        for r in v.get("regions") or []:
            if region and r.get("name") != region:
                continue
            computes = [c for c in r.get("computes") or [] if not accelerator or c.get("accelerator") == accelerator.value]
            if not computes:
                continue
            regions.append({**r, "computes": computes})
            for c in computes:
                rows.append([
                    v.get("name"), r.get("name"), c.get("id"), c.get("accelerator"), c.get("instanceType"),
                    c.get("instanceSize"), _fmt_num(c.get("numAccelerators")), _fmt_num(c.get("numCpus")),
                    _fmt_num(c.get("memoryGb"), " GB"), _fmt_num(c.get("gpuMemoryGb"), " GB"),
                    _fmt_num(c.get("pricePerHour")), c.get("status"),
                ])
        if regions:
            filtered.append({**v, "regions": regions})
    machine = catalog.get("machine")
    data = {"vendors": filtered, **({"machine": machine} if machine else {})}
    if machine and not state.fmt(output).machine:
        # The local provider runs every instance here, whatever vendor it names: say which machine that is.
        message(f"every instance runs on {machine.get('description') or machine.get('name')} (local provider)")
    show_items(rows, state.fmt(output), data=data, row=lambda r: r, empty="no hardware matches",
               columns=(Column("VENDOR", keep=True), "REGION", Column("ID", keep=True), Column("ACCEL", keep=True),
                        Column("TYPE", optional=True), Column("SIZE", optional=True), Column("#ACCEL", optional=True),
                        Column("CPUS", optional=True), Column("MEMORY", optional=True),
                        Column("GPU MEMORY", optional=True), Column("$/H", optional=True), Column("STATUS", keep=True)))
