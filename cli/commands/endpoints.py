"""Endpoint verbs: create, list, describe, wait, update, pause, resume, scale-to-zero, delete, events."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli.app import app
from cli.errors import CliError
from cli.output import OutputFormat, emit_data, message, out, show_endpoint, show_endpoints, show_items
from cli.spec import Accelerator, EndpointOptions, EndpointType, ScalingMetric, create_body, needs_catalog, parse_pairs, update_body
from cli.state import NamespaceOpt, OutputOpt, get_state
from cli.waiting import wait_for_deletion, wait_for_running
from controlplane.client import EndpointctlHTTPError

NameArg = Annotated[str, typer.Argument(help="Endpoint name.", show_default=False)]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Then wait until the endpoint is running.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0, help="Seconds to wait before giving up (default: no limit).")]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")]

# The options create and update share, declared once (None = not given; update sends only what is given).
Repository = Annotated[str | None, typer.Option("--repository", "-r", help="Model repository: a hub repo id or a local path.")]
Revision = Annotated[str | None, typer.Option("--revision", help="Model revision (commit, branch or tag).")]
Framework = Annotated[str | None, typer.Option("--framework", help="Model framework (create default: pytorch).")]
Task = Annotated[str | None, typer.Option("--task", help="Task, e.g. text-generation.")]
AcceleratorOpt = Annotated[Accelerator | None, typer.Option("--accelerator", case_sensitive=False, help="cpu or gpu (create default: from the catalog, cpu first).")]
Vendor = Annotated[str | None, typer.Option("--vendor", help="Hardware vendor, e.g. local or aws (see `endpointctl hardware`).")]
Region = Annotated[str | None, typer.Option("--region", help="Region, e.g. us-east-1.")]
InstanceType = Annotated[str | None, typer.Option("--instance-type", help="Instance type, e.g. nvidia-a100.")]
InstanceSize = Annotated[str | None, typer.Option("--instance-size", help="Instance size, e.g. x1.")]
MinReplica = Annotated[int | None, typer.Option("--min-replica", help="Minimum replicas (create default: 1).")]
MaxReplica = Annotated[int | None, typer.Option("--max-replica", help="Maximum replicas (create default: max(1, min)).")]
ScaleToZero = Annotated[int | None, typer.Option("--scale-to-zero-timeout", help="Minutes without traffic before scaling to zero.")]
MetricOpt = Annotated[ScalingMetric | None, typer.Option("--scaling-metric", help="Autoscale on pendingRequests (per replica) or hardwareUsage (percent).")]
ThresholdOpt = Annotated[float | None, typer.Option("--scaling-threshold", help="Autoscaling threshold for the metric (pendingRequests if no metric is given).")]
TypeOpt = Annotated[EndpointType | None, typer.Option("--type", case_sensitive=False, help="Access: public, authenticated (default), private; protected = authenticated.")]
ImageUrl = Annotated[str | None, typer.Option("--image-url", help="Custom container image (the default is the bundled runtime).")]
ImagePort = Annotated[int | None, typer.Option("--image-port", help="Port the custom image listens on.")]
HealthRoute = Annotated[str | None, typer.Option("--health-route", help="Health route of the custom image.")]
Env = Annotated[list[str] | None, typer.Option("--env", "-e", metavar="KEY=VALUE", help="Environment variable KEY=VALUE (repeatable).")]
Secret = Annotated[list[str] | None, typer.Option("--secret", metavar="KEY=VALUE", help="Secret KEY=VALUE (repeatable; never shown again).")]
Tag = Annotated[list[str] | None, typer.Option("--tag", metavar="TAG", help="Tag (repeatable).")]
SPEC_OPTIONS: dict[str, Any] = {
    "repository": Repository, "revision": Revision, "framework": Framework, "task": Task,
    "accelerator": AcceleratorOpt, "vendor": Vendor, "region": Region, "instance_type": InstanceType,
    "instance_size": InstanceSize, "min_replica": MinReplica, "max_replica": MaxReplica,
    "scale_to_zero_timeout": ScaleToZero, "scaling_metric": MetricOpt, "scaling_threshold": ThresholdOpt,
    "type": TypeOpt, "image_url": ImageUrl, "image_port": ImagePort, "health_route": HealthRoute, "env": Env,
    "secret": Secret, "tag": Tag,
}


def with_spec_options(verb: Callable[..., None]) -> Callable[..., None]:
    """Declare `SPEC_OPTIONS` as options of `verb(ctx, name, *, ..., **spec)`, right after NAME.

    Typer reads a command's options from its signature, so without this `create` and `update` would each spell
    out the same twenty-one parameters (and pass them on one by one); here they arrive in `**spec`.
    """
    signature = inspect.signature(verb, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
              for name, annotation in SPEC_OPTIONS.items()]
    after_name = [p.name for p in params].index("name") + 1
    verb.__signature__ = signature.replace(parameters=[*params[:after_name], *shared, *params[after_name:]])
    return verb


def _options(**kwargs: Any) -> EndpointOptions:
    """The shared options as `cli.spec` takes them: enums as their values, KEY=VALUE lists as dicts."""
    env, secrets, tags = kwargs.pop("env"), kwargs.pop("secret"), kwargs.pop("tag")
    for key in ("accelerator", "type", "scaling_metric"):
        if kwargs.get(key) is not None:
            kwargs[key] = kwargs[key].value
    return EndpointOptions(
        **kwargs,
        env=parse_pairs(env, option="--env"),
        secrets=parse_pairs(secrets, option="--secret"),
        tags=tags or None,
    )


def _after_change(ctx: typer.Context, ep: dict[str, Any], ns: str, name: str, fmt: OutputFormat, *, verb: str,
                  wait: bool = False, timeout: float | None = None, interval: float = 1.0) -> None:
    state = get_state(ctx)
    if wait:
        ep = wait_for_running(state.client, ns, name, timeout=timeout, interval=interval)
    if fmt is OutputFormat.table:
        status = ep.get("status") or {}
        line = f"endpoint {ns}/{name} {verb}"
        if status.get("state") != "running" or verb != "is running":
            line += f" (state: {status.get('state')})"
        if status.get("url"):
            line += f" — {status['url']}"
        out.print(line, markup=False, highlight=False)
    else:
        emit_data(ep, fmt)


@app.command(rich_help_panel="Endpoints")
@with_spec_options
def create(
    ctx: typer.Context,
    name: NameArg,
    *,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
    **spec: Any,
) -> None:
    """Create an endpoint (hardware not given is picked from the catalog: local vendor and CPU first)."""
    if not spec["repository"]:
        raise CliError("--repository is required: a hub repo id or a local path", exit_code=2)
    opts = _options(**spec)
    opts.check()
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    catalog = state.client.hardware(ns) if needs_catalog(opts) else None
    body = create_body(name, opts, catalog=catalog)
    ep = state.client.create_endpoint(ns, body)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="created", wait=wait, timeout=timeout, interval=interval)


@app.command("list", rich_help_panel="Endpoints")
def list_(
    ctx: typer.Context,
    namespace: NamespaceOpt = None,
    all_namespaces: Annotated[bool, typer.Option("--all", "-A", help="List every namespace you can see (yours and your organisations').")] = False,
    output: OutputOpt = None,
) -> None:
    """List endpoints."""
    state = get_state(ctx)
    if all_namespaces:
        me = state.whoami()
        namespaces = [me.get("name")] + [org.get("name") for org in me.get("orgs") or []]
        endpoints: list[dict[str, Any]] = []
        for ns in filter(None, namespaces):
            try:
                endpoints.extend(state.client.list_endpoints(ns))
            except EndpointctlHTTPError as exc:
                if exc.status_code not in (401, 403, 404):
                    raise
    else:
        endpoints = state.client.list_endpoints(state.resolve_namespace(namespace))
    show_endpoints(endpoints, state.fmt(output))


@app.command(rich_help_panel="Endpoints")
def describe(ctx: typer.Context, name: NameArg, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Show one endpoint: state, message, URL, replicas, model, hardware, scaling."""
    state = get_state(ctx)
    ep = state.client.get_endpoint(state.resolve_namespace(namespace), name)
    show_endpoint(ep, state.fmt(output))


@app.command(rich_help_panel="Endpoints")
def wait(
    ctx: typer.Context,
    name: NameArg,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Wait until the endpoint is running. Exit 1 on failed/updateFailed, 124 on timeout."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = wait_for_running(state.client, ns, name, timeout=timeout, interval=interval)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="is running")


@app.command(rich_help_panel="Endpoints")
@with_spec_options
def update(
    ctx: typer.Context,
    name: NameArg,
    *,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
    **spec: Any,
) -> None:
    """Change an endpoint; only the options given are sent (the API merges them into the current spec)."""
    opts = _options(**spec)
    body = update_body(opts)
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.update_endpoint(ns, name, body)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="updated", wait=wait, timeout=timeout, interval=interval)


@app.command(rich_help_panel="Endpoints")
def pause(ctx: typer.Context, name: NameArg, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Pause: stop all replicas; requests get 503 and do not wake it until `resume`."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.action(ns, name, "pause")
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="pause requested")


@app.command(rich_help_panel="Endpoints")
def resume(
    ctx: typer.Context,
    name: NameArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Resume a paused or scaled-to-zero endpoint (a running one is left as is)."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    verb = "resume requested"
    try:
        ep = state.client.action(ns, name, "resume")
    except EndpointctlHTTPError as exc:
        # The API's (and Hugging Face's) answer for a running endpoint; not an error for the user.
        if exc.status_code != 400 or "already running" not in exc.message:
            raise
        ep, verb = state.client.get_endpoint(ns, name), "is already running"
    _after_change(ctx, ep, ns, name, state.fmt(output), verb=verb, wait=wait, timeout=timeout, interval=interval)


@app.command("scale-to-zero", rich_help_panel="Endpoints")
def scale_to_zero(ctx: typer.Context, name: NameArg, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Scale to zero replicas now; the next request wakes the endpoint."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.action(ns, name, "scale-to-zero")
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="scale to zero requested")


@app.command(rich_help_panel="Endpoints")
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Then wait until the endpoint is gone.")] = False,
    timeout: TimeoutOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Delete an endpoint and stop its replicas (asks first unless --yes)."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    if not yes:
        # Fetch first, so a typo says "not found" instead of asking about an endpoint that does not exist.
        state.client.get_endpoint(ns, name)
        if not typer.confirm(f"Delete endpoint {ns}/{name}?", default=False, err=True):
            raise CliError("aborted: nothing deleted")
    state.client.delete_endpoint(ns, name)
    if wait:
        wait_for_deletion(state.client, ns, name, timeout=timeout)
        message(f"endpoint {ns}/{name} deleted")
    else:
        message(f"endpoint {ns}/{name} deletion requested")


@app.command(rich_help_panel="Endpoints")
def events(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=500, help="At most this many events (newest first; up to 500).")] = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Show an endpoint's events (state transitions with their reasons), newest first."""
    state = get_state(ctx)
    body = state.client.events(state.resolve_namespace(namespace), name, limit=limit)
    items = body.get("items", []) if isinstance(body, dict) else list(body or [])
    if limit is not None:
        items = items[:limit]
    show_items(items, state.fmt(output), columns=("TIME", "TYPE", "REASON", "MESSAGE"),
               row=lambda ev: [ev.get("createdAt") or ev.get("timestamp") or ev.get("time"), ev.get("type") or ev.get("kind"),
                               ev.get("reason"), ev.get("message")],
               empty="no events")
