"""A request body into a typed model: strict JSON (:mod:`runtime.jsonbody`), then pydantic, every problem a 4xx
naming the parameter. Routes read their bodies through here rather than FastAPI's own parsing, which would accept
``NaN`` and answer 422s in its own shape; :func:`json_body` gives such routes their /openapi.json entry back.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from starlette.requests import Request

from runtime import jsonbody
from runtime.errors import InvalidRequest, UnsupportedMediaType

M = TypeVar("M", bound=pydantic.BaseModel)


async def read_json(request: Request) -> Any:
    """The request body as strict JSON (:mod:`runtime.jsonbody`): not JSON, not UTF-8, ``NaN``, lone surrogates or
    nesting past MAX_JSON_DEPTH are a 400, a body declared as something else than JSON a 415."""
    check_json_content_type(request.headers.get("content-type"))
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("Request body is empty: send a JSON object")
    max_depth = request.app.state.runtime.settings.max_json_depth
    try:
        return jsonbody.decode(raw, max_depth=max_depth)
    except jsonbody.JSONInputError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from exc


def check_json_content_type(value: str | None) -> None:
    """No Content-Type is taken as JSON (raw sockets, old clients); a declared one must be JSON (TGI answers 415 too).

    ``application/json`` and any ``+json`` type, parameters such as ``charset`` ignored."""
    if value is None or not value.strip():
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType("Content-Type must be application/json")


async def parse_body(request: Request, model: type[M], *, status_cls: type = InvalidRequest) -> M:
    """Parse a JSON body into ``model``; every problem becomes a 4xx naming the parameter."""
    return validate_body(await read_json(request), model, status_cls=status_cls)


def validate_body(data: Any, model: type[M], *, status_cls: type = InvalidRequest) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        param = _input_param(data, err)
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"Unsupported parameter: '{param}' is not supported by this server", param=param
            ) from exc
        # Integers past 64 bits arrive as floats (orjson), which pydantic calls an unparsable "input string".
        reason = "integer out of range" if err["type"] == "int_parsing_size" else err["msg"]
        raise status_cls(f"Invalid value for '{param}': {reason}", param=param) from exc


def json_body(*models: type[pydantic.BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself (:func:`parse_body`: strict JSON, typed 4xx rather
    than FastAPI's own parsing), so that /openapi.json still documents what it accepts. Definitions are inlined:
    the schema stands alone, as generated clients and fuzzers read it. Several models: any one of them."""
    schemas = []
    for model in models:
        schema = model.model_json_schema()
        schemas.append(_inline_refs(schema, schema.pop("$defs", {})))
    body = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def _input_param(data: Any, err: Any) -> str | None:
    """The error's location as a path into the request: pydantic's ``loc`` also names the union member that failed
    (``messages.0.content.str``), which is no parameter of the client's; such steps are left out."""
    loc = err["loc"]
    parts: list[str | int] = []
    node = data
    for position, step in enumerate(loc):
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        elif not (position == len(loc) - 1 and err["type"] == "missing"):
            continue  # a union member's tag, not a place in the input
        parts.append(step)
    return jsonbody.join_path(None, parts)
