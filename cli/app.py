"""The root Typer app and its global options; command modules register their verbs on `app`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import EXIT_CODES
from cli.output import OutputFormat
from cli.state import get_state

app = typer.Typer(
    name="endpointctl",
    help=(
        "Manage self-hosted LLM inference endpoints.\n\n"
        "Connection settings come from flags, then ENDPOINTCTL_URL / ENDPOINTCTL_TOKEN / ENDPOINTCTL_NAMESPACE, "
        "then the config file (`endpointctl config show`), then what `endpointctl up` recorded.\n\n"
        "Shell completion: `endpointctl completion bash|zsh|fish` prints the script to source.\n\n"
        + EXIT_CODES
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"endpointctl {version('endpointctl')}")
        except PackageNotFoundError:
            print("endpointctl (not installed as a package)")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
    url: Annotated[str | None, typer.Option("--url", help="Control-plane URL (env: ENDPOINTCTL_URL; default http://127.0.0.1:8000).")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token (env: ENDPOINTCTL_TOKEN).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (env: ENDPOINTCTL_NAMESPACE; default: whoami's name).")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format: table, wide (every column), json or yaml.", case_sensitive=False)] = OutputFormat.table,
) -> None:
    state = get_state(ctx)
    state.url, state.token, state.namespace, state.output = url, token, namespace, output
    ctx.call_on_close(state.close)
