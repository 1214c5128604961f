"""Turns `create` / `update` options into the v2 wire body, with no I/O so it can be tested on its own.

`create` sends the body huggingface_hub sends (always `compute`, `model`, `provider`, `type`, `name`; optional
keys only when set). `update` mirrors the same nesting but carries only the options the user gave, because the
API merges a PUT field by field. Hardware left unspecified on `create` is picked from the control plane's own
catalog (`pick_compute`), so `endpointctl create NAME --repository R` works on any installation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from cli.errors import CliError


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


def _image(opts: EndpointOptions) -> dict[str, Any]:
    if opts.image_url is None:
        return {"huggingface": {}}
    custom: dict[str, Any] = {"url": opts.image_url}
    if opts.image_port is not None:
        custom["port"] = opts.image_port
    if opts.health_route is not None:
        custom["healthRoute"] = opts.health_route
    return {"custom": custom}


def _measure(opts: EndpointOptions) -> dict[str, float | None] | None:
    """`{"pendingRequests": 1.5}`-style autoscaling measure; a threshold alone means pending requests."""
    if opts.scaling_metric is None and opts.scaling_threshold is None:
        return None
    return {opts.scaling_metric or ScalingMetric.pendingRequests.value: opts.scaling_threshold}


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
    scaling: dict[str, Any] = {
        "minReplica": 1 if opts.min_replica is None else opts.min_replica,
        "maxReplica": opts.max_replica if opts.max_replica is not None else max(1, opts.min_replica or 1),
        "scaleToZeroTimeout": opts.scale_to_zero_timeout,
    }
    measure = _measure(opts)
    if measure:
        scaling["measure"] = measure
    model: dict[str, Any] = {
        "repository": opts.repository,
        "revision": opts.revision,
        "framework": opts.framework or "pytorch",
        "image": _image(opts),
    }
    if opts.task:
        model["task"] = opts.task
    if opts.env:
        model["env"] = opts.env
    if opts.secrets:
        model["secrets"] = opts.secrets
    body: dict[str, Any] = {
        "name": name,
        "type": opts.type or "authenticated",
        "compute": {
            "accelerator": accelerator,
            "instanceType": instance_type,
            "instanceSize": instance_size,
            "scaling": scaling,
        },
        "model": model,
        "provider": {"vendor": vendor, "region": region},
    }
    if opts.tags:
        body["tags"] = opts.tags
    return body


def update_body(opts: EndpointOptions) -> dict[str, Any]:
    """The PUT body: only what was given, in the same nesting as create (the API merges field by field)."""
    opts.check()
    body: dict[str, Any] = {}
    compute = {k: v for k, v in (("accelerator", opts.accelerator), ("instanceType", opts.instance_type),
                                 ("instanceSize", opts.instance_size)) if v is not None}
    scaling = {k: v for k, v in (("minReplica", opts.min_replica), ("maxReplica", opts.max_replica),
                                 ("scaleToZeroTimeout", opts.scale_to_zero_timeout), ("measure", _measure(opts))) if v is not None}
    if scaling:
        compute["scaling"] = scaling
    if compute:
        body["compute"] = compute
    model = {k: v for k, v in (("repository", opts.repository), ("revision", opts.revision), ("framework", opts.framework),
                               ("task", opts.task), ("env", opts.env), ("secrets", opts.secrets)) if v is not None}
    if opts.image_url is not None:
        model["image"] = _image(opts)
    if model:
        body["model"] = model
    provider = {k: v for k, v in (("vendor", opts.vendor), ("region", opts.region)) if v is not None}
    if provider:
        body["provider"] = provider
    if opts.type is not None:
        body["type"] = opts.type
    if opts.tags is not None:
        body["tags"] = opts.tags
    if not body:
        raise CliError("nothing to update: give at least one option (see `endpointctl update --help`)", exit_code=2)
    return body
