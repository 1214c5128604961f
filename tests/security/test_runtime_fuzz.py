"""Property-based fuzzing of the runtime over real HTTP: every operation of its own OpenAPI spec (`/openapi.json` of
a `python -m runtime` process on the tiny model), with hostile bodies, content types and API-key headers.

No answer may be a 5xx or a dropped connection; error bodies are in the route family's envelope (OpenAI's on
``/v1/*``, ``/tokenize``, ``/detokenize``; TGI's elsewhere); a stream that started must not carry a failed
generation; the server answers ``/health`` afterwards with no traceback in its log. Bodies start from a valid
request (so the fuzzing reaches validation, guidance and the engine, not only the JSON parser) and replace one
value at any depth, add a property the spec names, or are not JSON at all. Every operation of the spec must have a
plan here, so a new route is fuzzed or the test fails.

Bounded in examples (deterministic: ``derandomize``), generation kept short by small limits on the server.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.models import RuntimeServer, start_runtime_server
from tests.security.rawhttp import raw_request

API_KEY = "fuzz-key"
OPENAI_PATHS = ("/v1/", "/tokenize", "/detokenize")
USER = [{"role": "user", "content": "hi"}]
TREE = {"$defs": {"n": {"type": "object", "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
        "$ref": "#/$defs/n"}

# What each operation starts from, and how many cases it gets (generation routes more: they hold the most code).
PLANS: dict[tuple[str, str], tuple[dict[str, Any] | None, int]] = {
    ("post", "/v1/chat/completions"): ({"messages": USER, "max_tokens": 4}, 300),
    ("post", "/v1/completions"): ({"prompt": "hi", "max_tokens": 4}, 200),
    ("post", "/generate"): ({"inputs": "hi", "parameters": {"max_new_tokens": 4}}, 200),
    ("post", "/generate_stream"): ({"inputs": "hi", "parameters": {"max_new_tokens": 4}}, 120),
    ("post", "/"): ({"inputs": "hi", "parameters": {"max_new_tokens": 4}}, 100),
    ("post", "/tokenize"): ({"prompt": "hi", "messages": USER}, 100),
    ("post", "/detokenize"): ({"tokens": [1, 2, 3]}, 60),
    ("post", "/v1/embeddings"): ({"input": "hi"}, 20),  # a generation model: 404 after auth, before the body
    ("get", "/v1/models"): (None, 10),
    ("get", "/"): (None, 10),
    ("get", "/ping"): (None, 10),
    ("get", "/health"): (None, 10),
    ("get", "/info"): (None, 10),
    ("get", "/metrics"): (None, 10),
}

# Values worth more than random JSON for some properties: they reach guidance, the sampler and the limits.
INTERESTING: dict[str, list[Any]] = {
    "response_format": [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "t", "schema": TREE}},
                        {"type": "json_schema", "json_schema": {"name": "l", "schema": {"$ref": "#"}}},
                        {"type": "regex", "value": "[^\\s\\S]"}, {"type": "json_schema", "value": '{"$ref": "#"}'},
                        {"type": "json_schema", "json_schema": {"name": "i", "schema": {"type": "integer",
                                                                                       "minimum": -(2**70)}}}],
    "grammar": [{"type": "json", "value": TREE}, {"type": "json", "value": {"$ref": "#"}},
                {"type": "regex", "value": "(a|b){2,}"}, {"type": "regex", "value": "(" * 300},
                {"type": "json", "value": '{"type": "string", "pattern": "\\ud800"}'}],
    "tools": [[{"type": "function", "function": {"name": "f", "parameters": TREE}}],
              [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#"}}}],
              [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]],
    "tool_choice": ["required", "none", "auto", {"type": "function", "function": {"name": "f"}}, "g"],
    "seed": [2**64, 2**64 - 1, -(2**63) - 1, -1, 0],
    "temperature": [1e-300, 1e300, -0.0, 2.0],
    "repetition_penalty": [1e-300, 1e300],
    "top_k": [2**62, 1, -1],
    "top_p": [1e-300, 1.0],
    "typical_p": [1e-300, 0.5],
    "logit_bias": [{"0": -100}, {"-1": 1}, {str(2**70): 1}, {"1": 100}],
    "stop": [["x"] * 100, [""], "a", ["\ud800"]],
    "n": [16, 2**40], "best_of": [2, 2**40], "logprobs": [True, 5, 2**40], "top_logprobs": [5, 20],
    "top_n_tokens": [5, 2**40], "max_tokens": [1, 2**64], "max_new_tokens": [1, 2**64], "truncate": [1, 2**64],
    "min_tokens": [4, 2**40], "stream": [True], "details": [True], "decoder_input_details": [True],
    "messages": [[{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "\\ud800"}'}}]}, *USER],
        [{"role": "tool", "content": "x", "tool_call_id": "c"}, *USER], [{"role": "system", "content": [1]}]],
}

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["\ud800", "\udfff", "\x00", "a\nb", "é" * 100, "x" * 3000, 1e-300, 1e308, -0.0, 2**64, -(2**63)]),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=10)


def spec_properties(spec: dict[str, Any], method: str, path: str) -> list[str]:
    """Every property name the operation's documented body schema mentions, at any depth."""
    body = spec["paths"][path][method].get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    names: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return sorted(names)


def _value_for(draw: st.DrawFn, name: str) -> Any:
    if name in INTERESTING and draw(st.booleans()):
        return draw(st.sampled_from(INTERESTING[name]))
    return draw(json_value)


def _mutated(draw: st.DrawFn, base: dict[str, Any], names: list[str]) -> Any:
    """The base body with one value at any depth replaced, or with spec properties added (TGI's under
    ``parameters`` too): what reaches the validator's real paths."""
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()) and names:
            name = draw(st.sampled_from(names))
            nested = isinstance(body.get("parameters"), dict) and draw(st.booleans())
            target = body["parameters"] if nested else body
            target[name] = _value_for(draw, name)
            continue
        node: Any = body
        for _ in range(draw(st.integers(0, 3))):
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node)))
                if not isinstance(node[key], dict | list) or draw(st.booleans()):
                    node[key] = _value_for(draw, key)
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                node[draw(st.integers(0, len(node) - 1))] = draw(json_value)
                break
    return body


@st.composite
def requests(draw: st.DrawFn, method: str, base: dict[str, Any] | None,
             names: list[str]) -> tuple[dict[str, str], bytes | None, str]:
    auth = draw(st.sampled_from([f"Bearer {API_KEY}"] * 16 + ["", "Bearer wrong", "Bearer \xe9\xe9", "Basic x"]))
    headers = {"authorization": auth}
    query = draw(st.sampled_from(["", "?x=1", "?stream=true&%ff=%00"]))
    if base is None:
        return headers, None, query
    kind = draw(st.sampled_from(["mutated"] * 6 + ["json", "bytes", "deep", "empty"]))
    if kind == "mutated":
        text = json.dumps(_mutated(draw, base, names), ensure_ascii=draw(st.booleans()))
        body = text.encode("utf-8", "surrogatepass")
    elif kind == "json":
        body = json.dumps(draw(json_value)).encode("utf-8", "surrogatepass")
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "deep":  # with the key: a 401 before a large body is read would end in a TCP reset, not in the app
        headers["authorization"] = f"Bearer {API_KEY}"
        depth = draw(st.sampled_from([63, 65, 2000, 60_000]))
        body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        body = b""
    headers["content-type"] = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "application/x+json",
                                                                              "application/json; charset=latin-1"]))
    return headers, body, query


def check_envelope(path: str, status: int, head: bytes, content: bytes) -> None:
    if status < 400:
        if b"text/event-stream" in head:  # a stream that started: no generation may have failed in it
            assert b'"error_type":"generation"' not in content and b'"internal_error"' not in content, content[-600:]
        return
    assert b"content-type: application/json" in head, head
    if b"transfer-encoding: chunked" in head:
        return  # only 2xx streams are chunked here; a 4xx body is one JSON document
    body = json.loads(content)
    if path.startswith(OPENAI_PATHS):
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] == status
    else:
        assert set(body) == {"error", "error_type"}, body


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> RuntimeServer:
    env = {"API_KEY": API_KEY, "MAX_TOTAL_TOKENS": "64", "MAX_INPUT_TOKENS": "48", "MAX_CONCURRENT_REQUESTS": "8"}
    with start_runtime_server(tiny_model_dir, env=env) as srv:
        yield srv


FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz_operation(server: RuntimeServer, method: str, path: str, strategy: st.SearchStrategy, examples: int,
                   statuses: dict[int, int]) -> None:
    @settings(max_examples=examples, **FUZZ)
    @given(req=strategy)
    def one(req: tuple[dict[str, str], bytes | None, str]) -> None:
        headers, body, query = req
        status, head, content, _ = raw_request(server.base_url, method, path + query, headers, body, timeout=120)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"{method.upper()} {path} -> {status}: {content[:400]!r} for {body!r:.300}"
        assert status < 400 or b"Traceback" not in content  # a 200's text is the random model's: it may say anything
        check_envelope(path, status, head, content)

    one()


@pytest.mark.slow
def test_fuzz_every_operation_of_the_runtime_spec(server: RuntimeServer) -> None:
    spec = httpx.get(server.base_url + "/openapi.json", timeout=30).json()
    operations = sorted((method, path) for path, ops in spec["paths"].items() for method in ops)
    assert sorted(PLANS) == operations, "every operation of the runtime's spec needs a fuzz plan here"
    counts: dict[str, dict[int, int]] = {}
    for method, path in operations:
        base, examples = PLANS[(method, path)]
        statuses = counts.setdefault(f"{method.upper()} {path}", {})
        names = spec_properties(spec, method, path)
        if base is not None:
            assert names, f"{method} {path} documents no request body"

        fuzz_operation(server, method, path, requests(method, base, names), examples, statuses)
    cases = {op: sum(s.values()) for op, s in counts.items()}
    server_errors = sum(n for s in counts.values() for status, n in s.items() if status >= 500)
    print(f"\nruntime fuzz: {sum(cases.values())} cases, {server_errors} 5xx", file=sys.stderr)
    for op, statuses in counts.items():
        print(f"  {op}: {cases[op]} cases, statuses {sorted(statuses.items())}", file=sys.stderr)
    for op, (method, path) in zip(counts, operations, strict=True):
        assert cases[op] >= PLANS[(method, path)][1] * 0.9, op
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
    ok = httpx.post(server.base_url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                    headers={"authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert ok.status_code == 200, ok.text
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
