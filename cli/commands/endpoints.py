"""Endpoint verbs: create, list, describe (get, status), wait, update, pause, resume, scale-to-zero, delete, events.

A verb naming an endpoint that does not exist answers with the closest names in the namespace ("did you mean"),
as Click does for mistyped verbs (`suggest_names`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli.app import app
from cli.errors import CliError
from cli.output import EVENT_COLUMNS, OutputFormat, emit_data, err, event_row, message, out, show_endpoint, show_endpoints, show_items
from cli.spec import Accelerator, EndpointOptions, EndpointType, ScalingMetric, create_body, needs_catalog, parse_pairs, update_body
from cli.state import NamespaceOpt, OutputOpt, get_state
from cli.waiting import wait_for_deletion, wait_for_running, wait_for_state
from controlplane.client import ControlPlaneClient, EndpointctlHTTPError

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Endpoint name.", show_default=False)]
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


def closest_names(client: ControlPlaneClient, namespace: str, name: str) -> list[str]:
    """Names in `namespace` close to `name` (a mistyped endpoint name); none when they cannot be listed."""
    try:
        names = [ep.get("name") for ep in client.list_endpoints(namespace)]
    except EndpointctlHTTPError:
        return []
    return difflib.get_close_matches(name, [n for n in names if isinstance(n, str)], n=3, cutoff=0.6)


def not_found_hint(client: ControlPlaneClient, namespace: str, name: str, exc: EndpointctlHTTPError) -> CliError | None:
    """For a 404 about endpoint `namespace/name`: the same message plus "did you mean …?" when a name is close."""
    if exc.status_code != 404 or not re.match(rf"endpoint {re.escape(namespace)}/\S+ not found", exc.message):
        return None
    close = closest_names(client, namespace, name)
    if not close:
        return None
    return CliError(f"{exc.message}; did you mean {' or '.join(repr(c) for c in close)}?")


def suggest_names(verb: Callable[..., None]) -> Callable[..., None]:
    """Wrap a verb taking (ctx, name, namespace): an unknown endpoint name gets "did you mean"."""

    @functools.wraps(verb)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            verb(*args, **kwargs)
        except EndpointctlHTTPError as exc:
            state = get_state(kwargs["ctx"])
            ns = state.resolve_namespace(kwargs.get("namespace"))
            hint = not_found_hint(state.client, ns, kwargs["name"], exc)
            if hint is None:
                raise
            raise hint from exc

    return wrapper


def _after_change(ctx: typer.Context, ep: dict[str, Any], ns: str, name: str, fmt: OutputFormat, *, verb: str,
                  wait: bool = False, timeout: float | None = None, interval: float = 1.0) -> None:
    state = get_state(ctx)
    if wait:
        ep = wait_for_running(state.client, ns, name, timeout=timeout, interval=interval)
    if not fmt.machine:
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
    recommend: Annotated[bool, typer.Option("--recommend", help="Size the hardware not given from the model's "
                                                                "config.json (weights + KV cache; `endpointctl "
                                                                "recommend` shows the same arithmetic).")] = False,
    context: Annotated[int | None, typer.Option("--context", min=1, help="With --recommend: tokens per sequence "
                                                                          "(default: the model's).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=4096,
                                             help="With --recommend: sequences served at once.")] = 1,
    **spec: Any,
) -> None:
    """Create an endpoint (hardware not given is picked from the catalog: local vendor and CPU first, or with
    --recommend the smallest instance that holds the model)."""
    if not spec["repository"]:
        raise CliError("--repository is required: a hub repo id or a local path", exit_code=2)
    opts = _options(**spec)
    opts.check()
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    if recommend:
        from cli.commands.catalog import apply_recommendation

        apply_recommendation(state.client, opts, context=context, concurrency=concurrency)
    catalog = state.client.hardware(ns) if needs_catalog(opts) else None
    body = create_body(name, opts, catalog=catalog)
    ep = state.client.create_endpoint(ns, body)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="created", wait=wait, timeout=timeout, interval=interval)


@app.command("list", rich_help_panel="Endpoints")
def list_(
    ctx: typer.Context,
    namespace: NamespaceOpt = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "--all", "-A", help="List every namespace the token can see (all of them for the admin), with a NAMESPACE column.")] = False,
    output: OutputOpt = None,
) -> None:
    """List endpoints (-o wide for every column)."""
    state = get_state(ctx)
    if all_namespaces:
        endpoints: list[dict[str, Any]] = []
        for ns in [n.get("name") for n in state.client.namespaces()]:
            try:
                endpoints.extend(state.client.list_endpoints(ns))
            except EndpointctlHTTPError as exc:
                if exc.status_code != 404:  # gone since the namespaces were listed
                    raise
    else:
        endpoints = state.client.list_endpoints(state.resolve_namespace(namespace))
    show_endpoints(endpoints, state.fmt(output), all_namespaces=all_namespaces)


# How many recent events `describe` shows under the endpoint (`events` shows more).
DESCRIBE_EVENTS = 5


@suggest_names
def describe(ctx: typer.Context, name: NameArg, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Show one endpoint: state, message, URL, replicas, model, hardware, scaling and its recent events."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.get_endpoint(ns, name)
    fmt = state.fmt(output)
    events = None
    machine = None
    if not fmt.machine:
        body = state.client.events(ns, name, limit=DESCRIBE_EVENTS)
        events = (body.get("items") if isinstance(body, dict) else None) or []
        host = state.client.hardware(ns).get("machine")
        if isinstance(host, dict):
            machine = host.get("description") or host.get("name")
    show_endpoint(ep, fmt, events=events, machine=machine)


app.command("describe", rich_help_panel="Endpoints")(describe)
for _alias in ("get", "status"):
    app.command(_alias, rich_help_panel="Endpoints", help="Same as `describe`.")(describe)


@app.command(rich_help_panel="Endpoints", help=(
    "Wait until the endpoint is running.\n\n"
    "It ends at once, with exit code 3, on a paused or scaled-to-zero endpoint (nothing would wake it) unless "
    "--wake resumes it first; with exit code 1 on failed/updateFailed; 124 when --timeout runs out; "
    "130 on Ctrl-C."))
@suggest_names
def wait(
    ctx: typer.Context,
    name: NameArg,
    wake: Annotated[bool, typer.Option("--wake", help="Resume a paused or scaled-to-zero endpoint, then wait.")] = False,
    timeout: TimeoutOpt = None,
    interval: IntervalOpt = 1.0,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    if wake:
        request_resume(state.client, ns, name)
    ep = wait_for_running(state.client, ns, name, timeout=timeout, interval=interval)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb="is running")


def request_resume(client: ControlPlaneClient, ns: str, name: str) -> tuple[dict[str, Any], str]:
    """POST resume; a running endpoint is not an error for the user (the API answers 400 "already running")."""
    try:
        return client.action(ns, name, "resume"), "resume requested"
    except EndpointctlHTTPError as exc:
        if exc.status_code != 400 or "already running" not in exc.message:
            raise
        return client.get_endpoint(ns, name), "is already running"


@app.command(rich_help_panel="Endpoints")
@suggest_names
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


StopWaitOpt = Annotated[bool, typer.Option("--wait", help="Then wait until every replica has stopped.")]


def _stop(ctx: typer.Context, name: str, namespace: str | None, output: OutputFormat | None, *, action: str,
          target: str, wait: bool, timeout: float | None, interval: float) -> None:
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.action(ns, name, action)
    verb = f"{action.replace('-', ' ')} requested"
    if wait:
        ep = wait_for_state(state.client, ns, name, target=target, timeout=timeout, interval=interval)
        verb = "paused" if target == "paused" else "scaled to zero"
    _after_change(ctx, ep, ns, name, state.fmt(output), verb=verb)


@app.command(rich_help_panel="Endpoints")
@suggest_names
def pause(ctx: typer.Context, name: NameArg, wait: StopWaitOpt = False, timeout: TimeoutOpt = None,
          interval: IntervalOpt = 1.0, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Pause: stop all replicas; requests get 503 and do not wake it until `resume`."""
    _stop(ctx, name, namespace, output, action="pause", target="paused", wait=wait, timeout=timeout, interval=interval)


@app.command(rich_help_panel="Endpoints")
@suggest_names
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
    ep, verb = request_resume(state.client, ns, name)
    _after_change(ctx, ep, ns, name, state.fmt(output), verb=verb, wait=wait, timeout=timeout, interval=interval)


@app.command("scale-to-zero", rich_help_panel="Endpoints")
@suggest_names
def scale_to_zero(ctx: typer.Context, name: NameArg, wait: StopWaitOpt = False, timeout: TimeoutOpt = None,
                  interval: IntervalOpt = 1.0, namespace: NamespaceOpt = None, output: OutputOpt = None) -> None:
    """Scale to zero replicas now; the next request wakes the endpoint."""
    _stop(ctx, name, namespace, output, action="scale-to-zero", target="scaledToZero", wait=wait, timeout=timeout,
          interval=interval)


@app.command(rich_help_panel="Endpoints")
@suggest_names
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Then wait until the endpoint is gone.")] = False,
    timeout: TimeoutOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Delete an endpoint and stop its replicas (asks first unless --yes; answering no exits 1).

    With -o json/yaml it prints the endpoint as the API accepted the deletion."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    if not yes:
        # Fetch first, so a typo says "not found" instead of asking about an endpoint that does not exist.
        state.client.get_endpoint(ns, name)
        try:
            confirmed = typer.confirm(f"Delete endpoint {ns}/{name}?", default=False, err=True)
        except typer.Abort:  # stdin closed before an answer: no answer is no
            err.print()
            confirmed = False
        if not confirmed:
            message("Not deleted.")  # an answer, not an error; exit 1 so `delete x && …` stops
            raise typer.Exit(1)
    accepted = state.client.delete_endpoint(ns, name)
    if wait:
        wait_for_deletion(state.client, ns, name, timeout=timeout)
        message(f"endpoint {ns}/{name} deleted")
    else:
        message(f"endpoint {ns}/{name} deletion requested")
    fmt = state.fmt(output)
    if fmt.machine:
        emit_data(accepted, fmt)


@app.command(rich_help_panel="Endpoints")
@suggest_names
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
    show_items(items, state.fmt(output), columns=EVENT_COLUMNS, row=event_row, empty="no events")
