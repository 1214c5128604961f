"""The one builder of v2 request bodies (create and update), used by the SDK and the CLI alike.

Building and validating are apart on purpose: these functions only shape keyword arguments into the JSON the API
reads, with huggingface_hub's argument names and its `create_inference_endpoint` body (every key it always sends,
optional ones only when given); the API's pydantic models (`EndpointCreate`, `EndpointUpdate`) and its services
decide what is valid. No pydantic and no I/O here, so the bare `pip install endpointctl` can import it.

`update_body` carries only what was given, in the same nesting, because the API merges a PUT field by field.
A scaling threshold without a metric means pending requests (the API's default metric), on both bodies.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SCALING_METRIC = "pendingRequests"


def image_body(custom_image: dict[str, Any], *, username: str | None = None,
               password: str | None = None) -> dict[str, Any]:
    """`model.image`: a `{"url": ...}` dict is a custom image; a one-key `{"tgi": {...}}` passes as is."""
    image = {"custom": dict(custom_image)} if "url" in custom_image else dict(custom_image)
    if password is not None and username is None:
        raise ValueError("`container_registry_password` requires `container_registry_username`.")
    if username is not None:
        if not isinstance(image.get("custom"), dict):
            raise ValueError("Container registry credentials can only be set for a custom container image.")
        creds = {"username": username, **({"password": password} if password is not None else {})}
        image["custom"] = {**image["custom"], "credentials": creds}
    return image


def _measure(metric: str | None, threshold: float | None) -> dict[str, float | None] | None:
    if metric is None and threshold is None:
        return None
    return {str(metric or DEFAULT_SCALING_METRIC): threshold}


def create_body(
    name: str, *, repository: str, framework: str, accelerator: str, instance_size: str, instance_type: str,
    region: str, vendor: str, private_link_account_id: str | None = None, private_link_region: str | None = None,
    min_replica: int = 1, max_replica: int = 1, scaling_metric: str | None = None,
    scaling_threshold: float | None = None, scale_to_zero_timeout: int | None = None, revision: str | None = None,
    task: str | None = None, custom_image: dict[str, Any] | None = None,
    container_registry_username: str | None = None, container_registry_password: str | None = None,
    container_command: list[str] | None = None, container_args: list[str] | None = None,
    env: dict[str, str] | None = None, secrets: dict[str, str] | None = None, type: str = "authenticated",
    domain: str | None = None, path: str | None = None, cache_http_responses: bool | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """The POST /v2/endpoint/{namespace} body, as huggingface_hub's `create_inference_endpoint` sends it."""
    if custom_image is None:
        if container_registry_username is not None or container_registry_password is not None:
            raise ValueError("`custom_image` is required when setting container registry credentials.")
        image: dict[str, Any] = {"huggingface": {}}
    else:
        image = image_body(custom_image, username=container_registry_username, password=container_registry_password)
    scaling: dict[str, Any] = {"minReplica": min_replica, "maxReplica": max_replica,
                               "scaleToZeroTimeout": scale_to_zero_timeout}
    measure = _measure(scaling_metric, scaling_threshold)
    if measure is not None:
        scaling["measure"] = measure
    model: dict[str, Any] = {"repository": repository, "revision": revision, "framework": framework, "image": image}
    optional_model = (("task", task), ("command", container_command), ("args", container_args))
    model.update({key: value for key, value in optional_model if value is not None})
    if env:
        model["env"] = env
    if secrets:
        model["secrets"] = secrets
    body: dict[str, Any] = {
        "name": name,
        "type": str(type),
        "compute": {"accelerator": accelerator, "instanceType": instance_type, "instanceSize": instance_size,
                    "scaling": scaling},
        "model": model,
        "provider": {"vendor": vendor, "region": region},
    }
    if private_link_account_id is not None:
        body["privateService"] = {"accountId": private_link_account_id, "region": private_link_region}
    if domain is not None or path is not None:
        body["route"] = {k: v for k, v in (("domain", domain), ("path", path)) if v is not None}
    if cache_http_responses is not None:
        body["cacheHttpResponses"] = cache_http_responses
    if tags is not None:
        body["tags"] = tags
    return body


def update_body(
    *, current_image: dict[str, Any] | None = None, accelerator: str | None = None,
    instance_size: str | None = None, instance_type: str | None = None, min_replica: int | None = None,
    max_replica: int | None = None, scale_to_zero_timeout: int | None = None, repository: str | None = None,
    framework: str | None = None, revision: str | None = None, task: str | None = None,
    custom_image: dict[str, Any] | None = None, container_command: list[str] | None = None,
    container_args: list[str] | None = None, tensor_parallel_size: int | None = None,
    data_parallel_size: int | None = None, env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
    scaling_metric: str | None = None, scaling_threshold: float | None = None, vendor: str | None = None,
    region: str | None = None, type: str | None = None, domain: str | None = None, path: str | None = None,
    cache_http_responses: bool | None = None, tags: list[str] | None = None,
) -> dict[str, Any]:
    """The PUT /v2/endpoint/{namespace}/{name} body: only what was given (None = not given).

    Parallelism lives inside the image variant, so changing it alone re-sends the image: the one given, else
    `current_image` (the endpoint's `model.image` as last read).
    """
    body: dict[str, Any] = {}

    def put(section: str, key: str, value: Any, sub: str | None = None) -> None:
        if value is None:
            return
        target = body.setdefault(section, {})
        if sub:
            target = target.setdefault(sub, {})
        target[key] = value

    put("compute", "accelerator", accelerator)
    put("compute", "instanceType", instance_type)
    put("compute", "instanceSize", instance_size)
    put("compute", "minReplica", min_replica, "scaling")
    put("compute", "maxReplica", max_replica, "scaling")
    put("compute", "scaleToZeroTimeout", scale_to_zero_timeout, "scaling")
    put("compute", "measure", _measure(scaling_metric, scaling_threshold), "scaling")
    for key, value in (("repository", repository), ("revision", revision), ("framework", framework),
                       ("task", task), ("env", env), ("secrets", secrets), ("command", container_command),
                       ("args", container_args)):
        put("model", key, value)
    if custom_image is not None:
        put("model", "image", image_body(custom_image))
    if tensor_parallel_size is not None or data_parallel_size is not None:
        image = body.get("model", {}).get("image") or current_image
        if not image:
            raise ValueError("changing tensor or data parallelism needs the endpoint's current image")
        (variant, settings), = image.items()
        settings = dict(settings)
        if tensor_parallel_size is not None:
            settings["tensorParallelSize"] = tensor_parallel_size
        if data_parallel_size is not None:
            settings["dataParallelSize"] = data_parallel_size
        put("model", "image", {variant: settings})
    put("provider", "vendor", vendor)
    put("provider", "region", region)
    put("route", "domain", domain)
    put("route", "path", path)
    if type is not None:
        body["type"] = str(type)
    if cache_http_responses is not None:
        body["cacheHttpResponses"] = cache_http_responses
    if tags is not None:
        body["tags"] = tags
    return body
