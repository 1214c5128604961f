"""`token create|list|revoke`: API tokens (bearer tokens for the control plane and authenticated endpoints)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.app import app
from cli.output import OutputFormat, emit_data, message, show_items
from cli.state import OutputOpt, get_state

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token", rich_help_panel="Setup")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A label to recognise the token by.")] = "default",
    for_namespace: Annotated[str | None, typer.Option("--for", help="User namespace the token acts as (admin: any user, created if new); default: your own.")] = None,
    org: Annotated[list[str] | None, typer.Option("--org", help="Admin only: make that user a member of this organisation (repeatable).")] = None,
    output: OutputOpt = None,
) -> None:
    """Create a token. The token itself is printed once and cannot be shown again."""
    state = get_state(ctx)
    payload: dict = {"name": name}
    if for_namespace:
        payload["namespace"] = for_namespace
    if org:
        payload["orgs"] = org
    created = state.client.create_token(payload)
    fmt = state.fmt(output)
    if fmt is not OutputFormat.table:
        emit_data(created, fmt)
        return
    # The token alone on stdout, so `TOKEN=$(endpointctl token create)` works; the rest is for people.
    print(created.get("token"))
    message(f"token {created.get('id')} ({created.get('name')}) for namespace {created.get('namespace')}; "
            "store it now: it is not shown again")


@token_app.command("list")
def token_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """List your tokens (admins see every token)."""
    state = get_state(ctx)
    body = state.client.list_tokens()
    items = body.get("items", []) if isinstance(body, dict) else list(body or [])
    show_items(items, state.fmt(output), columns=("ID", "NAME", "NAMESPACE", "PREFIX", "CREATED", "LAST USED", "STATUS"),
               row=lambda t: [t.get("id"), t.get("name"), t.get("namespace"), (t.get("prefix") or "") + "…",
                              t.get("createdAt"), t.get("lastUsedAt") or "never",
                              "revoked" if t.get("revoked") else "active"],
               empty="no tokens")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id (see `token list`).", show_default=False)]) -> None:
    """Revoke a token: it stops working at once."""
    state = get_state(ctx)
    state.client.revoke_token(token_id)
    message(f"token {token_id} revoked")
