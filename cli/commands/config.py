"""`config set|show|unset`, `login` and `whoami`: where the CLI connects and as whom."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from cli import config
from cli.app import app
from cli.errors import CliError
from cli.output import emit_data, message, out, print_table, table
from cli.state import OutputOpt, get_state
from controlplane.client import ControlPlaneClient

config_app = typer.Typer(help="Show or change the config file (url, token, namespace).", no_args_is_help=True)
app.add_typer(config_app, name="config", rich_help_panel="Setup")


class Key(str, enum.Enum):
    url = "url"
    token = "token"
    namespace = "namespace"


def _mask(token: str | None) -> str | None:
    if not token:
        return token
    return token[:4] + "…" + token[-4:] if len(token) > 12 else "…"


@config_app.command("set")
def config_set(key: Annotated[Key, typer.Argument(case_sensitive=False)], value: str) -> None:
    """Store a setting in the config file."""
    path = config.set_config_value(key.value, value)
    message(f"{key.value} saved to {path}")


@config_app.command("unset")
def config_unset(key: Annotated[Key, typer.Argument(case_sensitive=False)]) -> None:
    """Remove a setting from the config file."""
    path = config.unset_config_value(key.value)
    message(f"{key.value} removed from {path}")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the token in full.")] = False,
    output: OutputOpt = None,
) -> None:
    """Show the settings in effect and where each comes from (flag, env, config file, up, default)."""
    state = get_state(ctx)
    s = state.settings
    values = {"url": s.url, "token": s.token if reveal else _mask(s.token), "namespace": s.namespace}
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data({"config_file": str(config.config_path()), "settings": values, "sources": s.sources}, fmt)
        return
    print_table(table(("SETTING", "VALUE", "SOURCE"), [[k, values[k] or "", s.sources[k]] for k in config.KEYS]))
    message(f"config file: {config.config_path()}")


@app.command(rich_help_panel="Setup")
def login(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option("--token", help="Token to store (default: asked for on a terminal, else read from stdin).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Control-plane URL to store along with it.")] = None,
) -> None:
    """Check a token against the control plane and store it (and the URL) in the config file.

    Without --token it asks on a terminal; with stdin not a terminal it reads the token from stdin, as
    `docker login --password-stdin` does: `endpointctl login < token-file` keeps it out of the shell history.
    """
    state = get_state(ctx)
    url = (url or state.settings.url).rstrip("/")
    token = token or state.token or _read_token()
    with ControlPlaneClient(url, token) as client:
        me = client.whoami()
    config.set_config_value("url", url)
    path = config.set_config_value("token", token)
    message(f"logged in to {url} as {me.get('name')}; saved to {path}")


def _read_token() -> str:
    import sys

    if not sys.stdin.isatty():
        token = sys.stdin.readline().strip()  # the first line; nothing is asked, so nothing is asked twice
        if not token:
            raise CliError("no token on stdin: pipe one in, or pass --token", exit_code=2)
        return token
    return typer.prompt("Token", hide_input=True, err=True).strip()


@app.command(rich_help_panel="Setup")
def whoami(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Show who the token belongs to and the namespaces it can use (every one, for the admin)."""
    state = get_state(ctx)
    me = state.whoami()
    namespaces = [n.get("name") for n in state.client.namespaces()]
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data({**me, "namespaces": namespaces}, fmt)
        return
    orgs = ", ".join(o.get("name", "") for o in me.get("orgs") or [])
    out.print(f"{me.get('name')} ({me.get('type')})" + (f" — orgs: {orgs}" if orgs else "") + f" at {state.settings.url}",
              markup=False, highlight=False)
    out.print(f"namespaces: {', '.join(filter(None, namespaces)) or '(none)'}", markup=False, highlight=False)
