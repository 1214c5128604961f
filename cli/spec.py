"""Turns `create` / `update` options into the arguments of the one body builder (`controlplane.bodies`), no I/O.

The SDK calls the same builder, so `endpointctl create` and `create_inference_endpoint` send the same body for the
same choices. What is the CLI's own lives here: flag checks that name the flag, and the defaults a bare
`endpointctl create NAME --repository R` needs: hardware left unspecified is picked from the control plane's own
catalog (`pick_compute`), so it works on any installation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from cli.errors import CliError
from controlplane import bodies


class EndpointType(str, enum.Enum):
    public = "public"
    authenticated = "authenticated"
    private = "private"
    protected = "protected"  # older clients' name for authenticated; the API accepts it as an alias


class ScalingMetric(str, enum.Enum):
    pendingRequests = "pendingRequests"  # noqa: N815 - the wire value
    hardwareUsage = "hardwareUsage"  # noqa: N815


class Accelerator(str, enum.Enum):
    cpu = "cpu"
    gpu = "gpu"


def parse_pairs(values: list[str] | None, *, option: str) -> dict[str, str] | None:
    """`["A=1", "B=x=y"]` → `{"A": "1", "B": "x=y"}`; a malformed pair is a clear error naming the option."""
    if not values:
        return None
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} expects KEY=VALUE, got {item!r}", exit_code=2)
        result[key.strip()] = value
    return result


@dataclass
class EndpointOptions:
    """The options `create` and `update` share; None means "not given"."""

    repository: str | None = None
    revision: str | None = None
    framework: str | None = None
    task: str | None = None
    accelerator: str | None = None
    vendor: str | None = None
    region: str | None = None
    instance_type: str | None = None
    instance_size: str | None = None
    min_replica: int | None = None
    max_replica: int | None = None
    scale_to_zero_timeout: int | None = None
    scaling_metric: str | None = None
    scaling_threshold: float | None = None
    type: str | None = None
    image_url: str | None = None
    image_port: int | None = None
    health_route: str | None = None
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = None
    tags: list[str] | None = field(default=None)

    def check(self) -> None:
        for name in ("min_replica", "max_replica", "scale_to_zero_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise CliError(f"--{name.replace('_', '-')} must not be negative (got {value})", exit_code=2)
        if self.min_replica is not None and self.max_replica is not None and self.min_replica > self.max_replica:
            raise CliError(f"--min-replica ({self.min_replica}) must not exceed --max-replica ({self.max_replica})", exit_code=2)
        if self.scaling_threshold is not None and not self.scaling_threshold > 0:
            raise CliError(f"--scaling-threshold must be greater than 0 (got {self.scaling_threshold:g})", exit_code=2)
        if (self.image_port is not None or self.health_route is not None) and self.image_url is None:
            raise CliError("--image-port and --health-route describe a custom image; give --image-url too", exit_code=2)


def _custom_image(opts: EndpointOptions) -> dict[str, Any] | None:
    """`--image-url/--image-port/--health-route` as the SDK's `custom_image` argument."""
    if opts.image_url is None:
        return None
    given = (("url", opts.image_url), ("port", opts.image_port), ("healthRoute", opts.health_route))
    return {key: value for key, value in given if value is not None}


def pick_compute(catalog: dict[str, Any], opts: EndpointOptions) -> tuple[str, str, dict[str, Any]]:
    """The first available (vendor, region, compute) in the catalog that matches what the user pinned.

    Prefers the `local` vendor (the embedded default runs replicas on this machine) and CPU unless asked for a
    GPU, so a bare `create` lands on hardware that can actually run here.
    """
    vendors = list(catalog.get("vendors") or [])
    vendors.sort(key=lambda v: v.get("name") != "local")
    wanted_accel = opts.accelerator or ("gpu" if opts.instance_type and opts.instance_type.startswith("nvidia") else "cpu")
    for vendor in vendors:
        if opts.vendor and vendor.get("name") != opts.vendor:
            continue
        for region in vendor.get("regions") or []:
            if opts.region and region.get("name") != opts.region:
                continue
            computes = sorted(region.get("computes") or [], key=lambda c: c.get("status", "available") != "available")
            for compute in computes:
                if compute.get("accelerator") != wanted_accel and not opts.instance_type:
                    continue
                if opts.instance_type and compute.get("instanceType") != opts.instance_type:
                    continue
                if opts.instance_size and compute.get("instanceSize") != opts.instance_size:
                    continue
                return vendor["name"], region["name"], compute
    pinned = ", ".join(
        f"{k}={v}" for k, v in (("vendor", opts.vendor), ("region", opts.region), ("accelerator", wanted_accel),
                                ("instance-type", opts.instance_type), ("instance-size", opts.instance_size)) if v
    )
    known = ", ".join(str(v.get("name")) for v in vendors) or "none"
    raise CliError(f"no hardware in the catalog matches {pinned} (vendors: {known}); see `endpointctl hardware`")


def needs_catalog(opts: EndpointOptions) -> bool:
    return not all((opts.vendor, opts.region, opts.instance_type, opts.instance_size, opts.accelerator))


def create_body(name: str, opts: EndpointOptions, *, catalog: dict[str, Any] | None = None) -> dict[str, Any]:
    """The POST /v2/endpoint/{ns} body, shaped like huggingface_hub's `create_inference_endpoint`."""
    opts.check()
    if not opts.repository:
        raise CliError("--repository is required", exit_code=2)
    vendor, region = opts.vendor, opts.region
    accelerator, instance_type, instance_size = opts.accelerator, opts.instance_type, opts.instance_size
    if needs_catalog(opts):
        if catalog is None:
            raise CliError("hardware not fully specified and no catalog to choose from")
        vendor, region, compute = pick_compute(catalog, opts)
        accelerator = accelerator or compute.get("accelerator")
        instance_type = instance_type or compute.get("instanceType")
        instance_size = instance_size or compute.get("instanceSize")
    min_replica = 1 if opts.min_replica is None else opts.min_replica
    return bodies.create_body(
        name, repository=opts.repository, framework=opts.framework or "pytorch", accelerator=accelerator,
        instance_size=instance_size, instance_type=instance_type, region=region, vendor=vendor,
        min_replica=min_replica, max_replica=opts.max_replica if opts.max_replica is not None else max(1, min_replica),
        scaling_metric=opts.scaling_metric, scaling_threshold=opts.scaling_threshold,
        scale_to_zero_timeout=opts.scale_to_zero_timeout, revision=opts.revision, task=opts.task or None,
        custom_image=_custom_image(opts), env=opts.env, secrets=opts.secrets, type=opts.type or "authenticated",
        tags=opts.tags or None)


def update_body(opts: EndpointOptions) -> dict[str, Any]:
    """The PUT body: only what was given, in the same nesting as create (the API merges field by field)."""
    opts.check()
    body = bodies.update_body(
        accelerator=opts.accelerator, instance_size=opts.instance_size, instance_type=opts.instance_type,
        min_replica=opts.min_replica, max_replica=opts.max_replica, scale_to_zero_timeout=opts.scale_to_zero_timeout,
        scaling_metric=opts.scaling_metric, scaling_threshold=opts.scaling_threshold, repository=opts.repository,
        revision=opts.revision, framework=opts.framework, task=opts.task, env=opts.env, secrets=opts.secrets,
        custom_image=_custom_image(opts), vendor=opts.vendor, region=opts.region, type=opts.type, tags=opts.tags)
    if not body:
        raise CliError("nothing to update: give at least one option (see `endpointctl update --help`)", exit_code=2)
    return body
