"""`catalog` (list, `deploy`) and `recommend`: the control plane's model catalog and its sizing of any repository.

The same routes huggingface_hub's `list_inference_catalog` / `create_inference_endpoint_from_catalog` call; the
table has one row per recipe, since a recipe id is what `catalog deploy` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.app import app
from cli.errors import CliError
from cli.commands.endpoints import IntervalOpt, TimeoutOpt, WaitOpt, _after_change
from cli.output import Column, emit_data, message, out, show_items
from cli.spec import Accelerator
from cli.state import NamespaceOpt, OutputOpt, get_state

catalog_app = typer.Typer(help="The model catalog: tested recipes (engine, hardware, settings) for known models. "
                               "Without a subcommand, list it.", invoke_without_command=True)
app.add_typer(catalog_app, name="catalog", rich_help_panel="Endpoints")

AcceleratorFilter = Annotated[Accelerator | None, typer.Option("--accelerator", case_sensitive=False,
                                                               help="Only recipes for cpu or gpu.")]


def _instance(recipe: dict[str, Any]) -> str:
    kind, size = recipe.get("instanceType"), recipe.get("instanceSize")
    where = f"{recipe.get('vendor')}/{recipe.get('region')}" if recipe.get("vendor") else ""
    return f"{where} {kind}-{size}".strip() if kind else where


@catalog_app.callback()
def catalog(
    ctx: typer.Context,
    accelerator: AcceleratorFilter = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Only recipes on this engine: vllm, sglang, tgi, tei, "
                                                                "llamacpp or huggingface (the bundled runtime).")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only models for this task (text-generation, ...).")] = None,
    license: Annotated[str | None, typer.Option("--license", help="Only models under this licence.")] = None,
    search: Annotated[str | None, typer.Option("--search", help="Only repositories whose id contains this.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=1000, help="At most this many models.")] = None,
    output: OutputOpt = None,
) -> None:
    """List the model catalog, one row per recipe (`catalog deploy <recipe>` takes its id)."""
    if ctx.invoked_subcommand is not None:
        return
    state = get_state(ctx)
    items = state.client.catalog(accelerator=accelerator.value if accelerator else None, engine=engine, task=task,
                                 license=license, search=search, limit=limit)
    rows = [(model, recipe) for model in items for recipe in model.get("recipes") or []]
    show_items(rows, state.fmt(output), data={"items": items}, empty="no catalog model matches",
               columns=(Column("MODEL"), Column("RECIPE", keep=True), Column("ENGINE", keep=True),
                        Column("ACCEL"), Column("INSTANCE", optional=True), Column("TASK", optional=True),
                        Column("LICENSE", optional=True)),
               row=lambda pair: [pair[0].get("repoId"), pair[1].get("publicId"), pair[1].get("engineType"),
                                 pair[1].get("accelerator"), _instance(pair[1]), pair[0].get("task"),
                                 pair[0].get("license")])


@catalog_app.command("deploy")
def catalog_deploy(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REPO|RECIPE",
                                       help="A catalog repository (owner/name: its default recipe) or a recipe id.")],
    name: Annotated[str | None, typer.Option("--name", help="The endpoint's name (default: generated).")] = None,
    accelerator: Annotated[Accelerator | None, typer.Option("--accelerator", case_sensitive=False,
                                                            help="With a repository: its recipe for cpu or gpu.")] = None,
    gguf_file: Annotated[str | None, typer.Option("--gguf-file", help="With a repository: its recipe for this "
                                                                      "GGUF file.")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create an endpoint from a catalog recipe (as create_inference_endpoint_from_catalog does)."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    if "/" in ref:
        ep = state.client.deploy_from_catalog(ns, repo_id=ref, name=name, gguf_file=gguf_file,
                                              accelerator=accelerator.value if accelerator else None)
    else:
        if accelerator is not None or gguf_file is not None:
            raise typer.BadParameter("--accelerator and --gguf-file pick a repository's recipe; a recipe id "
                                     "already is one", param_hint="REPO|RECIPE")
        ep = state.client.deploy_from_catalog(ns, recipe_id=ref, name=name)
    _after_change(ctx, ep, ns, str(ep.get("name")), state.fmt(output), verb="created", wait=wait, timeout=timeout,
                  interval=interval)


@app.command(rich_help_panel="Endpoints")
def recommend(
    ctx: typer.Context,
    repository: Annotated[str, typer.Argument(help="A Hub repository (owner/name) or, on a local stack, a model "
                                                   "directory with a config.json.")],
    context: Annotated[int | None, typer.Option("--context", min=1, help="Tokens per sequence (default: the "
                                                                          "model's context length).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=4096,
                                             help="Sequences served at once.")] = 1,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Serving dtype (default: the config's), e.g. "
                                                              "bfloat16.")] = None,
    accelerator: AcceleratorFilter = None,
    vendor: Annotated[str | None, typer.Option("--vendor", help="Only this vendor's instances.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Only this region's instances.")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="A Hub branch, tag or commit.")] = None,
    output: OutputOpt = None,
) -> None:
    """The smallest instance that holds a model's weights and KV cache, with the arithmetic."""
    local = Path(repository).expanduser()
    if local.is_dir():  # the control plane reads directories by absolute path (local stacks only)
        repository = str(local.resolve())
    state = get_state(ctx)
    answer = state.client.recommend(repository, context=context, concurrency=concurrency, dtype=dtype,
                                    accelerator=accelerator.value if accelerator else None, vendor=vendor,
                                    region=region, revision=revision)
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data(answer, fmt)
        return
    for line in answer.get("arithmetic") or []:
        out.print(line, markup=False, highlight=False)
    inst = answer.get("instance")
    if inst:
        message(f"create it with: endpointctl create NAME --repository {repository} --vendor {inst.get('vendor')} "
                f"--region {inst.get('region')} --instance-type {inst.get('instanceType')} "
                f"--instance-size {inst.get('instanceSize')}")


def apply_recommendation(client: Any, opts: Any, *, context: int | None, concurrency: int) -> None:
    """`create --recommend`: the recommended instance fills the hardware options not given (an accelerator,
    vendor or region that was given narrows the choice); the arithmetic goes to stderr."""
    if opts.instance_type is not None or opts.instance_size is not None:
        raise CliError("--recommend picks the instance: give --accelerator, --vendor or --region to narrow it, not "
                       "--instance-type or --instance-size", exit_code=2)
    repository = str(opts.repository)
    local = Path(repository).expanduser()
    answer = client.recommend(str(local.resolve()) if local.is_dir() else repository, context=context,
                              concurrency=concurrency, accelerator=opts.accelerator, vendor=opts.vendor,
                              region=opts.region, revision=opts.revision)
    for line in answer.get("arithmetic") or []:
        message(line)
    inst = answer.get("instance")
    if not inst:
        raise CliError("--recommend: no instance of the hardware catalog holds this model (the last line above "
                       "says how much it needs)")
    for field, key in (("accelerator", "accelerator"), ("vendor", "vendor"), ("region", "region"),
                       ("instance_type", "instanceType"), ("instance_size", "instanceSize")):
        if getattr(opts, field) is None:
            setattr(opts, field, inst.get(key))
