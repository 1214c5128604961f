"""Wire forms of grammars → canonical specs, and the errors bad ones get."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from runtime.guidance import InvalidGrammarError, from_response_format, from_tgi_grammar

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_tgi_json_accepts_object_string_and_alias_with_one_key():
    a = from_tgi_grammar({"type": "json", "value": SCHEMA})
    b = from_tgi_grammar({"type": "json_object", "value": json.dumps(SCHEMA, indent=2)})
    c = from_tgi_grammar({"type": "json", "value": {"required": ["a"], "properties": {"a": {"type": "integer"}}, "type": "object"}})
    assert a.kind == "json_schema" and a.schema() == SCHEMA
    assert a.key == b.key == c.key


def test_tgi_regex_and_pydantic_schema():
    class Person(BaseModel):
        name: str
        age: int

    assert from_tgi_grammar({"type": "regex", "value": "[0-9]+"}).value == "[0-9]+"
    spec = from_tgi_grammar({"type": "json", "value": Person.model_json_schema()})
    assert spec.schema()["required"] == ["name", "age"]
    assert from_tgi_grammar(None) is None


def test_openai_response_formats():
    assert from_response_format(None) is None
    assert from_response_format({"type": "text"}) is None
    assert from_response_format({"type": "json_object"}).kind == "json_object"
    spec = from_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}})
    assert spec.kind == "json_schema" and spec.schema() == SCHEMA


@pytest.mark.parametrize(
    ("grammar", "param", "words"),
    [
        ({"type": "yaml", "value": "x"}, "grammar.type", "must be one of"),
        ({"type": "json"}, "grammar.value", "required"),
        ({"type": "json", "value": "{not json"}, "grammar.value", "not valid JSON"),
        ({"type": "json", "value": [1, 2]}, "grammar.value", "JSON Schema object"),
        ({"type": "regex", "value": ""}, "grammar.value", "non-empty regex"),
        ({"type": "regex", "value": "a", "extra": 1}, "grammar", "unknown field"),
        ("json", "grammar", "must be an object"),
    ],
)
def test_bad_tgi_grammar_names_the_problem(grammar, param, words):
    with pytest.raises(InvalidGrammarError) as info:
        from_tgi_grammar(grammar)
    assert info.value.param == param
    assert words in info.value.message


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}, "response_format.json_schema.schema"),
    ],
)
def test_bad_response_format_names_the_parameter(fmt, param):
    with pytest.raises(InvalidGrammarError) as info:
        from_response_format(fmt)
    assert info.value.param == param
