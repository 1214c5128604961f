"""`token create|list|revoke`: API tokens (bearer tokens for the control plane and authenticated endpoints)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.app import app
from cli.errors import CliError
from cli.output import Column, emit_data, message, show_items
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
    if fmt.machine:
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
    show_items(items, state.fmt(output), columns=(Column("ID", keep=True), "NAME", "NAMESPACE", Column("PREFIX", keep=True),
                                                  Column("CREATED", optional=True), Column("LAST USED", optional=True),
                                                  Column("STATUS", keep=True)),
               row=lambda t: [t.get("id"), t.get("name"), t.get("namespace"), (t.get("prefix") or "") + "…",
                              t.get("createdAt"), t.get("lastUsedAt") or "never",
                              "revoked" if t.get("revoked") else "active"],
               empty="no tokens")


def resolve_token_id(tokens: list[dict], ref: str) -> int:
    """The id of the token `ref` names: its id, or the prefix `token list` shows (with or without the "…")."""
    if ref.isdigit():
        return int(ref)
    prefix = ref.strip().rstrip("…").rstrip(".")
    if not prefix:
        raise CliError("give a token id or the prefix `endpointctl token list` shows", exit_code=2)
    matches = [t for t in tokens if isinstance(t.get("prefix"), str) and not t.get("revoked")
               and (t["prefix"].startswith(prefix) or prefix.startswith(t["prefix"]))]
    if not matches:
        raise CliError(f"no active token has the prefix {prefix!r} (see `endpointctl token list`)")
    if len(matches) > 1:
        ids = ", ".join(str(t.get("id")) for t in matches)
        raise CliError(f"the prefix {prefix!r} matches {len(matches)} tokens (ids {ids}); give the id instead")
    return int(matches[0]["id"])


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="ID|PREFIX", help="Token id or the prefix `token list` shows.", show_default=False)],
                 output: OutputOpt = None) -> None:
    """Revoke a token: it stops working at once (-o json/yaml prints its record)."""
    state = get_state(ctx)
    if ref.isdigit():
        token_id = int(ref)
    else:
        body = state.client.list_tokens()
        token_id = resolve_token_id(body.get("items", []) if isinstance(body, dict) else [], ref)
    revoked = state.client.revoke_token(str(token_id))
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data(revoked, fmt)
    message(f"token {token_id} revoked" + (f" ({ref})" if str(token_id) != ref else ""))
