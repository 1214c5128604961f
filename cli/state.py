"""Per-invocation state shared by all commands: resolved settings, the output format and a lazily built client.

The root callback fills it from the global options; commands may override `--output` and `--namespace` locally,
so both `endpointctl -o json list` and `endpointctl list -o json` work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from cli import config
from cli.errors import CliError
from cli.output import OutputFormat

if TYPE_CHECKING:
    from controlplane.client import ControlPlaneClient


@dataclass
class State:
    url: str | None = None
    token: str | None = None
    namespace: str | None = None
    output: OutputFormat = OutputFormat.table
    _settings: config.Settings | None = field(default=None, repr=False)
    _client: ControlPlaneClient | None = field(default=None, repr=False)
    _whoami: dict | None = field(default=None, repr=False)

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.resolve(url=self.url, token=self.token, namespace=self.namespace)
        return self._settings

    @property
    def client(self) -> ControlPlaneClient:
        if self._client is None:
            # Imported here: httpx is most of a verb's start-up, and `--help` or `config show` never talk to the API.
            from controlplane.client import ControlPlaneClient

            self._client = ControlPlaneClient(self.settings.url, self.settings.token)
        return self._client

    def whoami(self) -> dict:
        if self._whoami is None:
            self._whoami = self.client.whoami()
        return self._whoami

    def resolve_namespace(self, override: str | None = None) -> str:
        """The namespace to act in: the command's flag, else the global one (flag/env/config), else whoami's name."""
        if override:
            return override
        if self.settings.namespace:
            return self.settings.namespace
        me = self.whoami()
        name = me.get("name") if isinstance(me, dict) else None
        if not name:
            raise CliError("the control plane's whoami answer has no name; pass --namespace")
        return name

    def fmt(self, override: OutputFormat | None = None) -> OutputFormat:
        return override or self.output

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def get_state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


# Options every resource command accepts locally too (overriding the global ones).
OutputOpt = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="Output format: table, wide (every column), json or yaml (overrides the global --output).", case_sensitive=False),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (user or organisation); default: the global one, else whoami's name."),
]
