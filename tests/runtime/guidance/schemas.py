"""Assorted JSON Schemas (nested objects, arrays, enums, numeric bounds, required fields, patterns), regexes, tools
and a pydantic model, shared by the library tests and the live-server tests (tiny and real model). Lengths are
bounded so a random model finishes within the token budget; everything else is left to the grammar."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
        },
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer", "minimum": -5, "maximum": 5}, "y": {"type": "number", "minimum": 0, "maximum": 1}},
                "required": ["x", "y"],
            },
            "label": {"type": "string", "pattern": "^[a-z]{2,5}$"},
        },
        "required": ["point", "label"],
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1, "maxItems": 3},
            "count": {"type": "integer", "minimum": 0, "maximum": 3},
        },
        "required": ["tags", "count"],
    },
    {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-F0-9]{4}$"},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        },
        "required": ["id", "status", "score"],
        "additionalProperties": False,
    },
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"k": {"type": "string", "maxLength": 3}, "v": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["k", "v"],
        },
        "minItems": 1,
        "maxItems": 2,
    },
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 6},
                    "roles": {"type": "array", "items": {"enum": ["admin", "dev", "ops"]}, "maxItems": 2},
                },
                "required": ["name", "roles"],
            },
            "active": {"type": "boolean"},
            "note": {"type": ["string", "null"], "maxLength": 5},
        },
        "required": ["user", "active", "note"],
    },
    {
        "type": "object",
        "properties": {"answer": {"const": "yes"}, "n": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 50}},
        "required": ["answer", "n"],
    },
    {
        "type": "object",
        "properties": {
            "kind": {"enum": ["circle", "square"]},
            "size": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 9}, {"type": "null"}]},
        },
        "required": ["kind", "size"],
    },
    {
        "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[0-9]{3}$"}}, "required": ["sku"]}},
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 2}},
        "required": ["items"],
    },
]

REGEXES: list[str] = [
    r"[0-9]{3}-[0-9]{4}",
    r"(yes|no|maybe)",
    r"[a-z]{3,6}@example\.(com|org)",
    r"\d{4}-\d{2}-\d{2}",
    r"#[0-9a-f]{6}",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two digits",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "integer", "minimum": 0, "maximum": 9}},
                "required": ["a", "b"],
            },
        },
    },
]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check_tool_calls(tool_calls, *, names=tuple(TOOL_SCHEMAS)) -> None:
    """OpenAI SDK tool calls: at least one, each of a known function, its arguments a JSON string its schema
    validates, ids unique."""
    assert tool_calls
    for call in tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        assert isinstance(call.function.arguments, str)
        jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])
    assert len({c.id for c in tool_calls}) == len(tool_calls)


class Reading(BaseModel):
    city: str = Field(max_length=10)
    celsius: int = Field(ge=-30, le=45)
    sky: Literal["clear", "cloudy", "rain"]
