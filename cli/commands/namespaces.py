"""`namespace create|list`: namespaces exist only once created (by the admin, or by minting a user's first token).

An endpoint can be created only in a namespace that exists, so `-n typo create …` is a clear "does not exist"
instead of a new namespace nobody asked for.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from cli.app import app
from cli.output import Column, emit_data, message, show_items
from cli.state import OutputOpt, get_state

namespace_app = typer.Typer(help="Create and list namespaces (users and organisations).", no_args_is_help=True)
app.add_typer(namespace_app, name="namespace", rich_help_panel="Setup")


class Kind(str, enum.Enum):
    org = "org"
    user = "user"


@namespace_app.command("create")
def namespace_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Namespace name.", show_default=False)],
    kind: Annotated[Kind, typer.Option("--kind", case_sensitive=False, help="org (members act in it; add them with `token create --org`) or user.")] = Kind.org,
    output: OutputOpt = None,
) -> None:
    """Create a namespace (admin only)."""
    state = get_state(ctx)
    created = state.client.create_namespace(name, kind=kind.value)
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data(created, fmt)
        return
    message(f"namespace {created.get('name')} ({created.get('kind')}) created")


@namespace_app.command("list")
def namespace_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """List the namespaces your token can act in (every one, for the admin)."""
    state = get_state(ctx)
    items = state.client.namespaces()
    show_items(items, state.fmt(output), columns=(Column("NAME", keep=True), Column("KIND", keep=True)),
               row=lambda n: [n.get("name"), n.get("kind")], empty="no namespaces")
