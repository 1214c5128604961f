"""Compilation, caching and — on the random tiny model — enforcement of schemas and regexes."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from runtime.guidance import InvalidGrammarError, from_response_format, from_tgi_grammar
from runtime.guidance.specs import GrammarSpec, json_schema_spec
from tests.runtime.guidance.schemas import REGEXES, SCHEMAS

PROMPTS = ["Describe the item.", "hello", "def main():", "Reply in JSON please", "import os\n"]


def test_cache_hits_share_the_compiled_grammar(compiler):
    spec = json_schema_spec(SCHEMAS[0], param="grammar")
    first = compiler.compile(spec)
    keywords_reordered = dict(reversed(SCHEMAS[0].items()))  # the same schema, its keywords written the other way
    assert list(keywords_reordered) != list(SCHEMAS[0])
    assert compiler.compile(json_schema_spec(keywords_reordered, param="grammar")) is first
    assert (compiler.stats.misses, compiler.stats.hits) == (1, 1)
    assert compiler.stats.compile_seconds > 0


def test_properties_are_written_in_the_order_the_schema_lists_them(compiler):
    """xgrammar writes an object's properties in the schema's order, which is the client's choice (OpenAI's
    structured outputs keep it), so the canonical form keeps it. Sorted, SmolLM2 asked for a pydantic model's
    {city, celsius, sky} had to write the temperature first and then named the city ")"."""

    def schema(*names: str) -> dict:
        return {"type": "object", "properties": {n: {"type": "integer"} for n in names}, "required": list(names)}

    zulu_first = json_schema_spec(schema("zulu", "alpha"), param="grammar")
    assert list(zulu_first.schema()["properties"]) == ["zulu", "alpha"]
    assert compiler.factory(zulu_first)().accept_text('{"zulu": 1, "alpha": 2}')
    assert not compiler.factory(zulu_first)().accept_text('{"alpha": 2')
    assert zulu_first.key != json_schema_spec(schema("alpha", "zulu"), param="grammar").key
    # Nested objects too, and a property that happens to be called "properties" is a name, not a keyword.
    nested = json_schema_spec({"type": "object", "required": ["properties"], "properties": {
        "properties": schema("zulu", "alpha")}}, param="grammar")
    assert compiler.factory(nested)().accept_text('{"properties": {"zulu": 1, "alpha": 2}}')
    assert not compiler.factory(nested)().accept_text('{"properties": {"alpha"')


def test_lru_evicts_least_recently_used(tiny_lm):
    from runtime.guidance import GrammarCompiler

    small = GrammarCompiler(tiny_lm.tokenizer, vocab_size=tiny_lm.vocab_size, cache_size=2)
    a, b, c = (GrammarSpec("regex", r) for r in REGEXES[:3])
    small.compile(a)
    small.compile(b)
    small.compile(a)  # a is now the most recent
    small.compile(c)  # evicts b
    assert small.cached(a) and small.cached(c) and not small.cached(b)
    assert len(small) == 2


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (json_schema_spec({"type": "object", "properties": {"a": {"type": "nosuch"}}}, param="g"), "properties/a/type"),
        (json_schema_spec({"type": "integer", "minimum": 5, "maximum": 2}, param="g"), "minimum greater than maximum"),
        (json_schema_spec({"$ref": "#/$defs/missing"}, param="g"), "missing"),
        (json_schema_spec({"type": "object", "required": "a"}, param="g"), "required"),
        (GrammarSpec("regex", "[a-"), "invalid regex"),
        (GrammarSpec("regex", "(ab"), "invalid regex"),
    ],
)
def test_invalid_schema_or_regex_is_a_typed_error_naming_the_problem(compiler, spec, words):
    with pytest.raises(InvalidGrammarError) as info:
        compiler.compile(spec, param="grammar.value")
    assert words in info.value.message
    assert info.value.param == "grammar.value"
    assert "project/cpp" not in info.value.message  # engine source locations are stripped


def test_unconstrained_tiny_model_does_not_write_json(tiny_lm):
    """The premise of the enforcement tests: left alone, the random model produces no valid JSON."""
    for text, _done in tiny_lm.generate(PROMPTS[:2], [None, None], max_new_tokens=40):
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


def test_schemas_are_enforced_on_the_random_model(compiler, tiny_lm):
    specs = [json_schema_spec(s, param="grammar") for s in SCHEMAS]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(specs))]
    # A free row rides in the same batch: constrained and unconstrained sequences share the forward pass.
    constraints = [compiler.factory(s)() for s in specs] + [None]
    results = tiny_lm.generate(prompts + ["free text row"], constraints, max_new_tokens=200)
    for schema, (text, finished) in zip(SCHEMAS, results, strict=False):
        assert finished, f"did not finish: {text!r}"
        jsonschema.validate(json.loads(text), schema)


def test_regexes_are_enforced_on_the_random_model(compiler, tiny_lm):
    constraints = [compiler.factory(GrammarSpec("regex", r))() for r in REGEXES]
    results = tiny_lm.generate(["x"] * len(REGEXES), constraints, max_new_tokens=60)
    for regex, (text, finished) in zip(REGEXES, results, strict=True):
        assert finished
        assert re.fullmatch(regex, text), (regex, text)


def test_json_object_mode_gives_an_object(compiler, tiny_lm):
    spec = from_response_format({"type": "json_object"})
    [(text, finished)] = tiny_lm.generate(["{"], [compiler.factory(spec)()], max_new_tokens=200)
    if finished:  # any object is allowed, so the random model may run long; when it ends it is an object
        assert isinstance(json.loads(text), dict)
    else:
        assert text.startswith("{")


def test_numeric_bounds_hold_even_when_the_model_pushes_digits(compiler, tiny_lm):
    """A heavy logit bias toward digits: the bounds (and termination) still come from the grammar."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 20}}, "required": ["n"]}
    digits = {tiny_lm.tokenizer.convert_tokens_to_ids(str(d)): 50.0 for d in range(10)}
    spec = from_tgi_grammar({"type": "json", "value": schema})
    [(text, finished)] = tiny_lm.generate(["count"], [compiler.factory(spec)()], logit_bias=digits, max_new_tokens=60)
    assert finished
    assert 10 <= json.loads(text)["n"] <= 20


@pytest.mark.parametrize("schema", [{"type": "string", "maxLength": 12}, {"type": "string", "minLength": 1}, {"type": "string"}])
def test_strings_never_hold_raw_control_characters_even_when_the_model_pushes_them(compiler, tiny_lm, schema):
    """RFC 8259: U+0000-U+001F only escaped. xgrammar's length-bounded string rule let them through (and a
    random model wrote ``\\x1d`` into tool-call arguments); every token holding one is biased up here."""
    tokenizer = tiny_lm.tokenizer
    controls = [i for i in range(tiny_lm.vocab_size) if any(ord(ch) < 0x20 for ch in tokenizer.decode([i]))]
    assert controls
    spec = json_schema_spec({"type": "object", "properties": {"s": schema}, "required": ["s"]}, param="g")
    assert not compiler.factory(spec)().accept_text('{"s": "a\x1db"}')
    [(text, finished)] = tiny_lm.generate(["x"], [compiler.factory(spec)()], logit_bias={i: 30.0 for i in controls}, max_new_tokens=40)
    assert not any(ord(ch) < 0x20 for ch in text), text
    if finished:
        jsonschema.validate(json.loads(text), spec.schema())
