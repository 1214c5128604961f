"""Parse the wire forms of a grammar into one canonical :class:`GrammarSpec`.

Two dialects reach us:

* TGI ``parameters.grammar``: ``{"type": "json" | "json_object" | "regex", "value": ...}``, where ``value`` is a
  JSON Schema (an object, or a string holding one — pydantic's ``model_json_schema()`` output works as is) or a
  regex string. ``json_object`` is TGI's alias of ``json``.
* OpenAI ``response_format``: ``{"type": "text"}`` (no constraint), ``{"type": "json_object"}`` (any JSON
  object) or ``{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`` — what
  ``client.chat.completions.parse(response_format=Model)`` and LangChain's ``with_structured_output`` send.

The spec's :attr:`GrammarSpec.key` is a canonical string (the schema re-serialised with its keywords sorted), so
two requests with the same schema written with its keywords in another order share one compiled grammar in the
cache. The members of each ``properties`` keep the schema's order: the grammar writes the properties in that order
(as OpenAI's structured outputs do), so it is part of what the schema asks for, not spelling.

A schema sent as a string is parsed as strictly as a request body (:mod:`runtime.jsonbody`, same MAX_JSON_DEPTH):
the body's own checks cannot see inside a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from runtime.guidance.errors import InvalidGrammarError
from runtime.jsonbody import DEFAULT_MAX_JSON_DEPTH, JSONInputError, decode

GrammarKind = Literal["json_schema", "json_object", "regex", "tool_calls"]

# Any JSON object: what OpenAI's json_object mode promises. Compiled without strict mode, so extra
# properties stay allowed.
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class GrammarSpec:
    """What to constrain the output to; ``value`` is canonical (schemas as compact JSON: :func:`canonical_schema`)."""

    kind: GrammarKind
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    def schema(self) -> Any:
        """The JSON Schema (decoded), for ``json_schema`` specs."""
        return json.loads(self.value)


def canonical_json(value: Any) -> str:
    """Compact JSON with every object's keys sorted: for values whose key order means nothing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_schema(schema: Any) -> str:
    """A JSON Schema as compact JSON, keywords sorted, the members of every ``properties`` in the schema's order.

    Why not :func:`canonical_json`: xgrammar generates an object's properties in the order the schema lists them,
    so sorting them rewrites the request. Asked for ``{"city", "celsius"}`` (what ``chat.completions.parse`` sends
    for a pydantic model with those fields, in that order), a real model had to write ``"celsius"`` before it had
    named the city, and then wrote ``"city": ")"``.
    """
    return json.dumps(_keywords_sorted(schema), separators=(",", ":"), ensure_ascii=False)


def _keywords_sorted(node: Any) -> Any:
    if isinstance(node, list):
        return [_keywords_sorted(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key in sorted(node):
        value = node[key]
        if key == "properties" and isinstance(value, dict):  # name -> subschema, in generation order
            out[key] = {name: _keywords_sorted(sub) for name, sub in value.items()}
        else:
            out[key] = _keywords_sorted(value)
    return out


def _schema_value(value: Any, *, param: str, max_json_depth: int) -> Any:
    if isinstance(value, str):
        try:
            value = decode(value, max_depth=max_json_depth, what=f"`{param}`", param=param)
        except JSONInputError as exc:
            raise InvalidGrammarError(exc.message, param=exc.param) from exc
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise InvalidGrammarError(
            f"`{param}` must be a JSON Schema object, got {type(value).__name__}", param=param
        )
    return value


def json_schema_spec(schema: Any, *, param: str, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> GrammarSpec:
    schema = _schema_value(schema, param=param, max_json_depth=max_json_depth)
    return GrammarSpec("json_schema", canonical_schema(schema))


def from_tgi_grammar(grammar: Any, *, param: str = "grammar",
                     max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> GrammarSpec | None:
    """TGI ``parameters.grammar`` → spec (``None`` when absent)."""
    if grammar is None:
        return None
    if not isinstance(grammar, dict):
        raise InvalidGrammarError(f"`{param}` must be an object with `type` and `value`", param=param)
    kind = grammar.get("type")
    extra = set(grammar) - {"type", "value"}
    if extra:
        raise InvalidGrammarError(f"`{param}` has unknown field(s): {', '.join(sorted(extra))}", param=param)
    if "value" not in grammar:
        raise InvalidGrammarError(f"`{param}.value` is required", param=f"{param}.value")
    value = grammar["value"]
    if kind in ("json", "json_object"):
        return json_schema_spec(value, param=f"{param}.value", max_json_depth=max_json_depth)
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise InvalidGrammarError(f"`{param}.value` must be a non-empty regex string", param=f"{param}.value")
        return GrammarSpec("regex", value)
    raise InvalidGrammarError(
        f"`{param}.type` must be one of 'json', 'json_object', 'regex'; got {kind!r}", param=f"{param}.type"
    )


def from_response_format(response_format: Any, *, param: str = "response_format",
                         max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> GrammarSpec | None:
    """OpenAI ``response_format`` → spec (``None`` for absent or ``{"type": "text"}``)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidGrammarError(f"`{param}` must be an object with a `type`", param=param)
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_object", canonical_json(ANY_OBJECT_SCHEMA))
    if kind == "json_schema" and "json_schema" not in response_format and "value" in response_format:
        # huggingface_hub's ChatCompletionInputGrammarType: {"type": "json_schema", "value": schema}
        return json_schema_spec(response_format["value"], param=f"{param}.value", max_json_depth=max_json_depth)
    if kind == "json_schema":
        body = response_format.get("json_schema")
        if not isinstance(body, dict):
            raise InvalidGrammarError(
                f"`{param}.json_schema` must be an object with `name` and `schema`", param=f"{param}.json_schema"
            )
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidGrammarError(
                f"`{param}.json_schema.name` is required", param=f"{param}.json_schema.name"
            )
        if "schema" not in body:
            # OpenAI treats a missing schema as "any JSON object".
            return GrammarSpec("json_object", canonical_json(ANY_OBJECT_SCHEMA))
        return json_schema_spec(body["schema"], param=f"{param}.json_schema.schema", max_json_depth=max_json_depth)
    if kind == "regex":  # TGI accepts its grammar object as response_format too
        return from_tgi_grammar(response_format, param=param, max_json_depth=max_json_depth)
    if kind == "json":
        return from_tgi_grammar(response_format, param=param, max_json_depth=max_json_depth)
    raise InvalidGrammarError(
        f"`{param}.type` must be one of 'text', 'json_object', 'json_schema'; got {kind!r}", param=f"{param}.type"
    )
