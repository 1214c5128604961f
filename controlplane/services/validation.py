"""Turns a parsed create/update request into the stored desired spec, or an `InvalidSpec` naming the parameter.

Shape errors were already answered with 422 by pydantic; everything here is a 400 whose message says what is
allowed, because huggingface_hub shows the `error` string to the user as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.catalog import Catalog
from common.envpolicy import refused_env_name
from common.errors import InvalidSpec, RefusedSpec
from common.engines import (
    COMMON_SETTINGS,
    GGUF_FILE_ENV,
    IMAGE_VARIANTS,
    KV_CACHE_DTYPES,
    TEI_POOLING,
    TGI_QUANTIZE,
    engine_info,
    gguf_model_path,
    unknown_settings,
)
from controlplane.schemas import DEFAULT_HEALTH_ROUTE, EndpointCreate, ImageVariant

# Matched with fullmatch: `$` would also accept a trailing newline.
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
MAX_NAME = 32
NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
MAX_ENV_NAME = 256
MAX_SCALE_TO_ZERO_MINUTES = 525_600  # a year
MEASURES = ("pendingRequests", "hardwareUsage")
MAX_TEXT = 1024  # repository, revision, framework, task, image url, route fields
MAX_TAGS = 64

# What the provider sets for the runtime and a tenant must not replace: where it listens and what it loads.
# MODEL_ID may be given as the platform's own value (HF Inference Endpoints' convention), nothing else.
PROVIDER_OWNED_ENV = frozenset({"PORT", "HOSTNAME", "MODEL_ID"})
PROVIDER_OWNED_ENV_PREFIXES = ("ENDPOINTCTL_",)
MODEL_ID_PLATFORM_VALUE = "/repository"
# The bundled runtime's flags for the same settings. Its parser accepts unambiguous abbreviations and
# `--flag=value`, so every prefix of these is refused too.
PROVIDER_OWNED_FLAGS = ("--hostname", "--port", "--model-id")


@dataclass(frozen=True)
class SpecLimits:
    """Sizes and counts a tenant's spec may reach; every one is a setting (`ENDPOINTCTL_MAX_*`)."""

    max_replicas: int = 100
    max_env_entries: int = 128
    max_env_bytes: int = 64 * 1024
    max_args_entries: int = 256
    max_args_bytes: int = 16 * 1024
    max_private_service_bytes: int = 4 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> SpecLimits:
        return cls(**{f: getattr(settings, f) for f in cls.__dataclass_fields__ if hasattr(settings, f)})


@dataclass(frozen=True)
class ValidSpec:
    """What the database stores for a valid request: the public spec and the write-only parts apart."""

    name: str
    type: str
    spec: dict[str, Any]
    secrets: dict[str, str]
    image_credentials: dict[str, str | None] | None
    catalog_id: str


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        raise InvalidSpec(
            f"invalid endpoint name {name[:64]!r}: a name is a DNS label of at most {MAX_NAME} characters: lowercase "
            "letters, digits and '-', starting and ending with a letter or digit", param="name")
    return name


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_RE.fullmatch(namespace or ""):
        raise InvalidSpec(f"invalid namespace {namespace[:80]!r}: letters, digits, '.', '_' and '-', at most 63 "
                          "characters, starting with a letter or digit", param="namespace")
    return namespace


def _text(value: str | None, param: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidSpec(f"{param} is required and must not be empty", param=param)
        return value
    if len(value) > MAX_TEXT:
        raise InvalidSpec(f"{param} is longer than {MAX_TEXT} characters", param=param)
    if "\x00" in value:
        raise InvalidSpec(f"{param} contains a NUL character", param=param)
    return value


def _env(values: dict[str, str] | None, param: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (values or {}).items():
        if len(key) > MAX_ENV_NAME or not ENV_NAME_RE.fullmatch(key):
            raise InvalidSpec(f"{param}: {key[:64]!r} is not a valid environment variable name", param=param)
        if "\x00" in value:
            raise InvalidSpec(f"{param}.{key} contains a NUL character", param=param)
        reason = refused_env_name(key)
        if reason is not None:
            raise RefusedSpec(f"{param}.{key} is refused: {reason}", param=f"{param}.{key}")
        if key in PROVIDER_OWNED_ENV or key.startswith(PROVIDER_OWNED_ENV_PREFIXES):
            if not (key == "MODEL_ID" and value == MODEL_ID_PLATFORM_VALUE):
                raise RefusedSpec(f"{param}.{key} is set by the platform for every replica and cannot be replaced",
                                  param=f"{param}.{key}")
        out[key] = value
    return out


def _check_sizes(model: Any, env: dict[str, str], secrets: dict[str, str], limits: SpecLimits) -> None:
    entries = len(env) + len(secrets)
    if entries > limits.max_env_entries:
        raise RefusedSpec(f"model.env and model.secrets hold {entries} variables; at most {limits.max_env_entries}",
                          param="model.env")
    size = sum(len(k.encode()) + len(v.encode()) for d in (env, secrets) for k, v in d.items())
    if size > limits.max_env_bytes:
        raise RefusedSpec(f"model.env and model.secrets hold {size} bytes; at most {limits.max_env_bytes}",
                          param="model.env")
    items = [*(model.command or []), *(model.args or [])]
    if len(items) > limits.max_args_entries:
        raise RefusedSpec(f"model.command and model.args hold {len(items)} items; at most {limits.max_args_entries}",
                          param="model.args")
    size = sum(len(item.encode()) for item in items)
    if size > limits.max_args_bytes:
        raise RefusedSpec(f"model.command and model.args hold {size} bytes; at most {limits.max_args_bytes}",
                          param="model.args")


def _check_args(args: list[str] | None) -> None:
    for item in args or []:
        flag = item.split("=", 1)[0]
        if len(flag) > 2 and flag.startswith("--") and any(owned.startswith(flag) for owned in PROVIDER_OWNED_FLAGS):
            raise RefusedSpec(f"model.args: {flag[:64]!r} sets where the replica listens or what it loads, which the "
                              f"platform owns ({', '.join(PROVIDER_OWNED_FLAGS)} cannot be given)", param="model.args")


def _check_private_service(value: dict[str, str | None] | None, limits: SpecLimits) -> None:
    if value is None:
        return
    size = sum(len(k.encode()) + len((v or "").encode()) for k, v in value.items())
    if size > limits.max_private_service_bytes:
        raise RefusedSpec(f"privateService holds {size} bytes; at most {limits.max_private_service_bytes}",
                          param="privateService")
    for key, item in value.items():
        if "\x00" in key or "\x00" in (item or ""):
            raise InvalidSpec("privateService contains a NUL character", param="privateService")


def _route_path(value: str | None, param: str) -> str | None:
    value = _text(value, param)
    if value and not value.startswith("/"):
        raise InvalidSpec(f"{param} must start with '/' (got {value[:64]!r})", param=param)
    return value


# Engine settings that become an engine's arguments: (field, lowest, highest) for counts, choices for words.
_ENGINE_COUNTS = {"tensorParallelSize": 64, "dataParallelSize": 64, "maxNumSeqs": 100_000,
                  "maxNumBatchedTokens": 10_000_000, "maxInputLength": 10_000_000, "maxTotalTokens": 10_000_000,
                  "maxBatchPrefillTokens": 10_000_000, "maxBatchTotalTokens": 100_000_000,
                  "maxBatchTokens": 10_000_000, "maxConcurrentRequests": 100_000, "ctxSize": 10_000_000,
                  "nParallel": 4096, "threadsHttp": 1024}
_ENGINE_CHOICES = {"kvCacheDtype": KV_CACHE_DTYPES, "quantize": TGI_QUANTIZE, "pooling": TEI_POOLING}


def _documented_aliases(image: ImageVariant, param: str) -> tuple[ImageVariant, dict[str, str] | None]:
    """huggingface_hub's own `create_inference_endpoint` example sends `custom_image={"health_route": ..., "env":
    {...}, "url": ...}`: `health_route` is read as `healthRoute`, and the image's `env` joins `model.env` (under the
    same policy, `model.env` winning a clash). Returns the image without them, and that env."""
    extra = dict(image.model_extra or {})
    if "env" not in extra and "health_route" not in extra:
        return image, None
    image_env = extra.pop("env", None)
    if image_env is not None and (not isinstance(image_env, dict)
                                  or not all(isinstance(k, str) and isinstance(v, str) for k, v in image_env.items())):
        raise InvalidSpec(f"{param}.env must be an object of string values", param=f"{param}.env")
    snake = extra.pop("health_route", None)
    if snake is not None and not isinstance(snake, str):
        raise InvalidSpec(f"{param}.health_route must be a string", param=f"{param}.health_route")
    fields = {name: getattr(image, name) for name in image.model_fields_set
              if name in ImageVariant.model_fields and getattr(image, name) is not None}
    if snake is not None and fields.get("healthRoute") is None:
        fields["healthRoute"] = snake
    return ImageVariant.model_validate({**extra, **fields}), image_env


def _check_engine_settings(variant: str, image: ImageVariant, param: str) -> None:
    """Only the settings the variant's engine documents (`common.engines`), each within what it accepts: the
    worker turns them into the engine's arguments, and a field the hosted API would silently drop is a 422 here."""
    given = {name for name in image.model_fields_set if getattr(image, name) is not None}
    given |= set(image.model_extra or {})
    unknown = unknown_settings(variant, given)
    if unknown:
        allowed = sorted(COMMON_SETTINGS | engine_info(variant).settings)
        raise RefusedSpec(f"{param}.{unknown[0][:64]} is not a setting of the {variant} image; its settings: "
                          + ", ".join(allowed), param=f"{param}.{unknown[0][:64]}")
    for name, highest in _ENGINE_COUNTS.items():
        value = getattr(image, name)
        if value is not None and not 1 <= value <= highest:
            raise InvalidSpec(f"{param}.{name} must be between 1 and {highest} (got {value})", param=f"{param}.{name}")
    for name, choices in _ENGINE_CHOICES.items():
        value = getattr(image, name)
        if value is not None and value not in choices:
            raise InvalidSpec(f"{param}.{name} must be one of {', '.join(choices)} (got {value[:64]!r})",
                              param=f"{param}.{name}")
    if image.modelPath is not None:
        problem = gguf_model_path(image.modelPath)
        if problem:
            raise InvalidSpec(f"{param}.modelPath {problem}", param=f"{param}.modelPath")


def validate_create(body: EndpointCreate, catalog: Catalog, limits: SpecLimits = SpecLimits()) -> ValidSpec:
    name = check_name(body.name)
    endpoint_type = "authenticated" if body.type == "protected" else body.type

    compute = body.compute
    for field_name in ("accelerator", "instanceType", "instanceSize"):
        _text(getattr(compute, field_name), f"compute.{field_name}", required=True)
    _text(body.provider.vendor, "provider.vendor", required=True)
    _text(body.provider.region, "provider.region", required=True)
    inst = catalog.resolve(vendor=body.provider.vendor, region=body.provider.region,
                           instance_type=compute.instanceType, instance_size=compute.instanceSize,
                           accelerator=compute.accelerator)

    scaling = compute.scaling
    if scaling.minReplica < 0:
        raise InvalidSpec(f"compute.scaling.minReplica must be >= 0 (got {scaling.minReplica})",
                          param="compute.scaling.minReplica")
    if scaling.maxReplica < 1 or scaling.maxReplica > limits.max_replicas:
        raise InvalidSpec(f"compute.scaling.maxReplica must be between 1 and {limits.max_replicas} "
                          f"(got {scaling.maxReplica})", param="compute.scaling.maxReplica")
    if scaling.minReplica > scaling.maxReplica:
        raise InvalidSpec(f"compute.scaling.minReplica ({scaling.minReplica}) must be <= maxReplica "
                          f"({scaling.maxReplica})", param="compute.scaling.minReplica")
    timeout = scaling.scaleToZeroTimeout
    if timeout is not None and not 0 <= timeout <= MAX_SCALE_TO_ZERO_MINUTES:
        raise InvalidSpec(f"compute.scaling.scaleToZeroTimeout is in minutes and must be between 0 and "
                          f"{MAX_SCALE_TO_ZERO_MINUTES} (got {timeout})", param="compute.scaling.scaleToZeroTimeout")
    scaling_out: dict[str, Any] = {"minReplica": scaling.minReplica, "maxReplica": scaling.maxReplica,
                                   "scaleToZeroTimeout": timeout}
    if scaling.measure is not None:
        if len(scaling.measure) != 1 or next(iter(scaling.measure)) not in MEASURES:
            raise InvalidSpec("compute.scaling.measure must have exactly one key: pendingRequests or hardwareUsage",
                              param="compute.scaling.measure")
        (metric, threshold), = scaling.measure.items()
        if threshold is not None and (threshold <= 0 or (metric == "hardwareUsage" and threshold > 100)):
            raise InvalidSpec(f"compute.scaling.measure.{metric} must be > 0" +
                              (" and <= 100 (percent)" if metric == "hardwareUsage" else ""),
                              param=f"compute.scaling.measure.{metric}")
        scaling_out["measure"] = {metric: threshold}

    model = body.model
    _text(model.repository, "model.repository", required=True)
    _text(model.framework, "model.framework", required=True)
    _text(model.revision, "model.revision")
    _text(model.task, "model.task")
    if len(model.image) != 1:
        raise InvalidSpec("model.image must have exactly one key, one of: " + ", ".join(IMAGE_VARIANTS),
                          param="model.image")
    (variant, image), = model.image.items()
    if variant not in IMAGE_VARIANTS:
        raise InvalidSpec(f"unknown model.image variant {variant[:64]!r}; valid variants: " + ", ".join(IMAGE_VARIANTS),
                          param="model.image")
    param = f"model.image.{variant}"
    image, image_env = _documented_aliases(image, param)
    if variant == "custom" and not image.url:
        raise InvalidSpec(f"{param}.url is required for a custom image", param=f"{param}.url")
    _text(image.url, f"{param}.url")
    if image.port is not None and not 1 <= image.port <= 65535:
        raise InvalidSpec(f"{param}.port must be between 1 and 65535 (got {image.port})", param=f"{param}.port")
    health_route = _route_path(image.healthRoute, f"{param}.healthRoute") or DEFAULT_HEALTH_ROUTE
    if image.credentials is not None and variant != "custom":
        raise InvalidSpec("registry credentials are only allowed for a custom image", param=f"{param}.credentials")
    _check_engine_settings(variant, image, param)
    credentials = None
    image_out = image.model_dump(exclude_none=True, exclude={"credentials"})
    if image.credentials is not None:
        _text(image.credentials.username, f"{param}.credentials.username", required=True)
        credentials = {"username": image.credentials.username, "password": image.credentials.password}
        image_out["credentials"] = {"username": image.credentials.username}
    if (engine_info(variant).kind == "llamacpp" and not image.modelPath
            and not (model.env or {}).get(GGUF_FILE_ENV)):
        # llama.cpp loads one named file; the worker cannot list the repository to pick one on a cluster.
        raise InvalidSpec(f"{param}.modelPath is required: the GGUF file llama.cpp serves (or set model.env."
                          f"{GGUF_FILE_ENV})", param=f"{param}.modelPath")
    for list_name in ("command", "args"):
        for item in getattr(model, list_name) or []:
            if "\x00" in item:
                raise InvalidSpec(f"model.{list_name} contains a NUL character", param=f"model.{list_name}")
    env = {**_env(image_env, f"{param}.env"), **_env(model.env, "model.env")}  # model.env wins a clash
    secrets = _env(model.secrets, "model.secrets")
    _check_sizes(model, env, secrets, limits)
    _check_args(model.args)
    if model.command:
        _check_args(model.command[1:])
    clash = sorted(set(env) & set(secrets))
    if clash:
        raise InvalidSpec(f"model.env and model.secrets both set {', '.join(clash)}", param="model.secrets")

    route = None
    if body.route is not None:
        route = {"domain": _text(body.route.domain, "route.domain"), "path": _route_path(body.route.path, "route.path")}
    tags = list(body.tags) if body.tags is not None else []
    if len(tags) > MAX_TAGS:
        raise InvalidSpec(f"at most {MAX_TAGS} tags", param="tags")
    for tag in tags:
        if not tag or len(tag) > 128 or "\x00" in tag:
            raise InvalidSpec("tags must be non-empty strings of at most 128 characters", param="tags")

    spec = {
        "compute": {"id": inst.id, "accelerator": inst.accelerator, "instanceType": inst.instanceType,
                    "instanceSize": inst.instanceSize, "scaling": scaling_out},
        "model": {"repository": model.repository, "revision": model.revision, "framework": model.framework,
                  "task": model.task, "image": {variant: image_out}, "command": model.command,
                  "args": model.args, "env": env},
        "provider": {"vendor": body.provider.vendor, "region": body.provider.region},
        "route": route,
        "tags": tags,
        "cacheHttpResponses": body.cacheHttpResponses,
        "healthRoute": health_route,
    }
    _check_private_service(body.privateService, limits)
    if body.privateService is not None:
        spec["privateService"] = body.privateService
    return ValidSpec(name=name, type=endpoint_type, spec=spec, secrets=secrets, image_credentials=credentials,
                     catalog_id=inst.id)


# Parts of the spec that change what the replicas run; other changes (scaling, tags, type) do not roll pods.
def runtime_view(spec: dict[str, Any], secrets: dict[str, str], credentials: dict | None) -> dict[str, Any]:
    compute = {k: v for k, v in spec["compute"].items() if k != "scaling"}
    return {"compute": compute, "model": spec["model"], "provider": spec["provider"],
            "healthRoute": spec.get("healthRoute"), "secrets": secrets, "credentials": credentials}
