"""Hostile input against a real runtime process (`python -m runtime` on the tiny model, real HTTP): every payload
of issue 16 item 12 and what a security reviewer would send next. Each must be a clear 4xx in its route family's
envelope — OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on ``/v1/*``, ``/tokenize`` and
``/detokenize``, TGI's ``{"error", "error_type"}`` on ``/generate``, ``/generate_stream`` and ``/`` — never a 500,
a dropped connection or a hang, and the server answers ``/health`` 200 afterwards with no traceback in its log.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.models import RuntimeServer, start_runtime_server

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TGI_ROUTES = ("/generate", "/generate_stream", "/")
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> RuntimeServer:
    with start_runtime_server(tiny_model_dir, env={"MAX_TOTAL_TOKENS": "256", "MAX_INPUT_TOKENS": "200"}) as srv:
        yield srv
        log = srv.log()
        assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def http(server: RuntimeServer):
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client
        assert client.get("/health").status_code == 200


def is_tgi(path: str) -> bool:
    return path in TGI_ROUTES


def expect_error(resp: httpx.Response, path: str, *, status: int | tuple[int, ...] = (400, 422),
                 param: str | None = None) -> str:
    """Assert a 4xx in the route family's envelope; returns the message."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, f"{path}: {resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    if is_tgi(path):
        assert set(body) == {"error", "error_type"}, body
        return body["error"]
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == resp.status_code
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]["message"]


def post_raw(http: httpx.Client, path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post(path, content=body, headers={"content-type": content_type})


def generation_body(path: str, **extra) -> dict:
    """A valid short request for ``path`` with ``extra`` merged into its parameters."""
    if path == CHAT:
        return {"messages": USER, "max_tokens": 2, **extra}
    if path == COMPLETIONS:
        return {"prompt": "hi", "max_tokens": 2, **extra}
    return {"inputs": "hi", "parameters": {"max_new_tokens": 2, **extra}}


# ------------------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, *TGI_ROUTES])
def test_seed_of_2_to_the_64_is_a_4xx_naming_seed(http, path):
    sampling = {"temperature": 1.0} if path in (CHAT, COMPLETIONS) else {"do_sample": True}
    resp = http.post(path, json=generation_body(path, seed=2**64, **sampling))
    message = expect_error(resp, path, param="seed")
    assert "seed" in message


@pytest.mark.parametrize(("path", "seed"), [(CHAT, 2**63 - 1), (CHAT, -(2**63)), (COMPLETIONS, 2**63 - 1),
                                            ("/generate", 2**64 - 1), ("/generate", 0)])
def test_seeds_at_the_edges_of_the_range_generate(http, path, seed):
    sampling = {"temperature": 1.0, "n": 2} if path in (CHAT, COMPLETIONS) else {"do_sample": True}
    resp = http.post(path, json=generation_body(path, seed=seed, **sampling))
    assert resp.status_code == 200, resp.text


def test_tgi_seed_is_unsigned(http):
    message = expect_error(http.post("/generate", json=generation_body("/generate", seed=-1, do_sample=True)),
                           "/generate")
    assert "seed" in message


# ----------------------------------------------------------------------------------------- lone surrogates
SURROGATE_BODIES = [
    (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}', "messages.0.content"),
    (CHAT, b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}], "max_tokens": 2}',
     "messages.0.content.0.text"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x", "name": "\\udc00"}], "max_tokens": 2}',
     "messages.0.name"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": true, "stop": ["\\ud800"]}',
     "stop.0"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "tool_prompt": "\\ud800", '
           b'"tools": [{"type": "function", "function": {"name": "f"}}]}', "tool_prompt"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, '
           b'"tools": [{"type": "function", "function": {"name": "f", "description": "\\ud800"}}]}',
     "tools.0.function.description"),
    (CHAT, b'{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}', "model"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "\\ud800": 1}', None),
    (COMPLETIONS, b'{"prompt": "\\ud800", "max_tokens": 2}', "prompt"),
    (COMPLETIONS, b'{"prompt": ["ok", "\\udbff\\udbff"], "max_tokens": 2}', "prompt.1"),
    (COMPLETIONS, b'{"prompt": "x", "max_tokens": 2, "logit_bias": {"\\ud800": 1}}', "logit_bias"),
    ("/generate", b'{"inputs": "\\ud800", "parameters": {"max_new_tokens": 2}}', None),
    ("/generate", b'{"inputs": "a\\udc00", "parameters": {"max_new_tokens": 2, "return_full_text": true}}', None),
    ("/generate_stream", b'{"inputs": "\\ud800", "parameters": {"max_new_tokens": 2}}', None),
    ("/", b'{"inputs": "\\ud800", "parameters": {"max_new_tokens": 2}}', None),
    ("/", b'{"inputs": "\\ud800", "stream": true}', None),
    ("/generate", b'{"inputs": "x", "parameters": {"max_new_tokens": 2, "stop": ["\\ud800"]}}', None),
    ("/tokenize", b'{"inputs": "\\ud800"}', "inputs"),
    ("/tokenize", b'{"prompt": "\\ud800"}', "prompt"),
    ("/tokenize", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages.0.content"),
]


@pytest.mark.parametrize(("path", "body", "param"), SURROGATE_BODIES)
def test_lone_surrogates_are_a_4xx(http, path, body, param):
    message = expect_error(post_raw(http, path, body), path, status=400, param=param)
    assert "surrogate" in message


def test_surrogates_inside_a_grammar_given_as_a_string_are_a_4xx(http):
    grammar = {"type": "json", "value": '{"const": "\\ud800"}'}
    message = expect_error(http.post("/generate", json=generation_body("/generate", grammar=grammar)), "/generate")
    assert "surrogate" in message


@pytest.mark.parametrize("arguments", ['{"a": "\\ud800"}', "[" * 70 + "]" * 70])
def test_earlier_tool_call_arguments_that_are_not_usable_json_stay_text(http, arguments):
    """OpenAI lets a client replay any string as an earlier call's arguments; one that does not decode to sane JSON
    (a lone surrogate, nesting past MAX_JSON_DEPTH) reaches the template as the string it is, never a 500."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    body = {"messages": [{"role": "assistant", "content": "", "tool_calls": [call]}, *USER], "max_tokens": 2}
    resp = http.post(CHAT, json=body)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("body", [b'{"prompt": "\xff\xfe", "max_tokens": 2}',  # not UTF-8
                                  b'{"prompt": "\xed\xa0\x80", "max_tokens": 2}',  # a surrogate in CESU-8
                                  b'\xef\xbb\xbf{"prompt": "x", "max_tokens": 2}'])  # a byte-order mark
def test_invalid_utf8_bytes_are_a_400(http, body):
    expect_error(post_raw(http, COMPLETIONS, body), COMPLETIONS, status=400)
    expect_error(post_raw(http, "/generate", body.replace(b'"prompt"', b'"inputs"')), "/generate", status=400)


# ---------------------------------------------------------------------------------------------- nesting
DEEP = 50_000


@pytest.mark.parametrize(("path", "body"), [
    (CHAT, b"[" * DEEP + b"]" * DEEP),
    (CHAT, b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    (CHAT, b'{"messages": [{"role": "user", "content": ' + b"[" * DEEP + b"]" * DEEP + b"}]}"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "response_format": ' + b'{"a":' * DEEP + b"1"
     + b"}" * DEEP + b"}"),
    (COMPLETIONS, b'{"prompt": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("/generate", b'{"inputs": "x", "parameters": {"grammar": ' + b"[" * DEEP + b"]" * DEEP + b"}}"),
    ("/generate_stream", b"[" * DEEP + b"]" * DEEP),
    ("/", b"{" + b'"a":{' * DEEP + b"}" * DEEP + b"}"),
    ("/tokenize", b"[" * DEEP + b"]" * DEEP),
    ("/detokenize", b'{"tokens": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
])
def test_50k_deep_json_is_a_400_naming_the_limit(http, path, body):
    message = expect_error(post_raw(http, path, body), path, status=400)
    assert "MAX_JSON_DEPTH" in message


def test_messages_content_nested_within_the_limit_is_a_400(http):
    content = json.loads("[" * 20 + "]" * 20)
    expect_error(http.post(CHAT, json={"messages": [{"role": "user", "content": content}]}), CHAT, status=400,
                 param="messages.0.content")


def _deep_schema(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + "{}" + "}" * depth


@pytest.mark.parametrize(("path", "body"), [
    (CHAT, '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "response_format": {"type": '
           '"json_schema", "json_schema": {"name": "a", "schema": ' + _deep_schema(2000) + "}}}"),
    (CHAT, '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "tools": [{"type": "function", '
           '"function": {"name": "f", "parameters": ' + _deep_schema(2000) + "}}]}"),
    ("/generate", '{"inputs": "x", "parameters": {"max_new_tokens": 2, "grammar": {"type": "json", "value": '
                  + _deep_schema(2000) + "}}}"),
    # the schema as a JSON string inside the body: only the grammar parser sees how deep it is
    ("/generate", json.dumps({"inputs": "x", "parameters": {
        "max_new_tokens": 2, "grammar": {"type": "json", "value": _deep_schema(2000)}}})),
    (CHAT, json.dumps({"messages": USER, "max_tokens": 2,
                       "response_format": {"type": "json_schema", "value": _deep_schema(2000)}})),
])
def test_2000_deep_schema_grammar_is_a_4xx(http, path, body):
    message = expect_error(post_raw(http, path, body.encode()), path)
    assert "MAX_JSON_DEPTH" in message


def test_a_nested_schema_within_the_limit_still_works(http):
    schema = json.loads(_deep_schema(8))
    resp = http.post("/generate", json=generation_body("/generate", grammar={"type": "json", "value": schema}))
    assert resp.status_code == 200, resp.text


# ------------------------------------------------------------------------------------------- not JSON
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, "/generate", "/generate_stream", "/", "/tokenize",
                                  "/detokenize"])
@pytest.mark.parametrize("body", [b"hello", b"", b"{", b'{"a": 1} trailing', b"NaN", b"null", b"[1, 2]", b'"x"',
                                  b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e309}',
                                  b'{"a": -1e400}', b"\x00\x01\x02"])
def test_bodies_that_are_not_a_json_object_are_a_400(http, path, body):
    expect_error(post_raw(http, path, body), path, status=400)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, "/generate", "/generate_stream", "/", "/tokenize"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", "application/jsonx", ";charset=utf-8"])
def test_a_body_declared_as_something_else_than_json_is_a_415(http, path, content_type):
    body = json.dumps(generation_body(path) if path not in ("/tokenize",) else {"prompt": "x"}).encode()
    message = expect_error(post_raw(http, path, body, content_type), path, status=415)
    assert "application/json" in message


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json"])
def test_json_content_types_are_accepted(http, content_type):
    resp = post_raw(http, COMPLETIONS, json.dumps(generation_body(COMPLETIONS)).encode(), content_type)
    assert resp.status_code == 200, resp.text


def test_nonfinite_numbers_in_tgi_parameters_are_a_400_not_a_failed_generation(http):
    for literal in (b"NaN", b"Infinity", b"1e309"):
        body = b'{"inputs": "x", "parameters": {"max_new_tokens": 2, "temperature": ' + literal + b"}}"
        expect_error(post_raw(http, "/generate", body), "/generate", status=400)


@pytest.mark.parametrize("body", [
    {"temperature": -0.0}, {"temperature": 0.0, "top_p": 1.0}, {"frequency_penalty": -0.0},
])
def test_negative_zero_is_a_number(http, body):
    assert http.post(COMPLETIONS, json=generation_body(COMPLETIONS, **body)).status_code == 200


# ------------------------------------------------------------------------------------ absurd parameters
HUGE = 10**20


@pytest.mark.parametrize(("path", "extra", "param"), [
    (CHAT, {"n": HUGE}, "n"),
    (CHAT, {"max_tokens": HUGE}, "max_tokens"),
    (CHAT, {"max_completion_tokens": HUGE}, "max_completion_tokens"),
    (CHAT, {"logprobs": True, "top_logprobs": HUGE}, "top_logprobs"),
    (CHAT, {"stop": ["x"] * 100_000}, "stop"),
    (CHAT, {"logit_bias": {"-1": 1}}, "logit_bias"),
    (CHAT, {"logit_bias": {str(HUGE): 1}}, "logit_bias"),
    (CHAT, {"logit_bias": {"9" * 5000: 1}}, "logit_bias"),
    (CHAT, {"logit_bias": {"1e3": 1}}, "logit_bias"),
    (CHAT, {"logit_bias": {"5": 10**300}}, "logit_bias.5"),
    (COMPLETIONS, {"n": -1}, "n"),
    (COMPLETIONS, {"best_of": HUGE}, "best_of"),
    (COMPLETIONS, {"logprobs": HUGE}, "logprobs"),
    (COMPLETIONS, {"max_tokens": HUGE}, "max_tokens"),
    (COMPLETIONS, {"min_tokens": HUGE}, "min_tokens"),
    (COMPLETIONS, {"prompt": [HUGE]}, "prompt"),
    (COMPLETIONS, {"prompt": [-1]}, "prompt"),
    (COMPLETIONS, {"prompt": []}, "prompt"),
    (COMPLETIONS, {"prompt": [[]]}, "prompt"),
    (COMPLETIONS, {"prompt": ["x"] * 100}, "prompt"),
    ("/generate", {"best_of": HUGE, "do_sample": True}, None),
    ("/generate", {"top_n_tokens": HUGE}, None),
    ("/generate", {"max_new_tokens": HUGE}, None),
    ("/generate", {"truncate": HUGE}, None),
    ("/generate", {"stop": ["x"] * 100_000}, None),
    ("/generate_stream", {"best_of": 2, "do_sample": True}, None),
])
def test_absurd_values_are_a_4xx(http, path, extra, param):
    body = generation_body(path, **extra)
    if "prompt" in extra:
        body["prompt"] = extra["prompt"]
    expect_error(http.post(path, json=body), path, param=param)


@pytest.mark.parametrize(("path", "extra"), [
    (COMPLETIONS, {"temperature": 1e-300}),
    (COMPLETIONS, {"temperature": 1.0, "repetition_penalty": 1e-300}),
    (COMPLETIONS, {"temperature": 1.0, "repetition_penalty": 1e300, "top_k": 2**62, "top_p": 1e-300}),
    (COMPLETIONS, {"temperature": 1.0, "logprobs": 5, "logit_bias": {str(i): -100 for i in range(8192)}}),
    ("/generate", {"do_sample": True, "temperature": 1e-300}),
    ("/generate", {"do_sample": True, "repetition_penalty": 1e-300, "details": True, "top_n_tokens": 5}),
    ("/generate", {"do_sample": True, "temperature": 1e300, "typical_p": 1e-300, "top_p": 1e-300}),
])
def test_extreme_but_valid_sampling_parameters_generate(http, path, extra):
    resp = http.post(path, json=generation_body(path, **extra))
    assert resp.status_code == 200, resp.text


def test_a_10mb_prompt_is_a_413(http):
    prompt = "x" * 10_000_000
    for path, body in [(COMPLETIONS, {"prompt": prompt}), ("/generate", {"inputs": prompt})]:
        expect_error(http.post(path, json=body), path, status=413)

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 100_000
        yield b'"}'

    expect_error(http.post(COMPLETIONS, content=chunks(), headers={"content-type": "application/json"}),
                 COMPLETIONS, status=413)


# ------------------------------------------------------------------------------------------ chat shapes
@pytest.mark.parametrize(("path", "body", "param"), [
    (CHAT, {"messages": [{"role": "hacker", "content": "x"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": None, "content": "x"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"content": "x"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": "user", "content": {"text": "x"}}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, "messages.0.content"),
    (CHAT, {"messages": "hi"}, "messages"),
    ("/tokenize", {"messages": [{"role": "hacker", "content": "x"}]}, "messages.0.role"),
    ("/tokenize", {"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages.0.extra"),
])
def test_chat_messages_of_the_wrong_shape_are_a_400(http, path, body, param):
    expect_error(http.post(path, json=body), path, status=400, param=param)


# ----------------------------------------------------------------------------------- grammars that never end
REF_LOOPS = [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}},
     "$defs": {"x": {"type": "array", "items": {"$ref": "#/$defs/x"}, "minItems": 1}}},
]


@pytest.mark.parametrize("schema", REF_LOOPS)
def test_ref_loops_are_a_4xx(http, schema):
    fmt = {"type": "json_schema", "json_schema": {"name": "loop", "schema": schema}}
    message = expect_error(http.post(CHAT, json={"messages": USER, "max_tokens": 4, "response_format": fmt}), CHAT,
                           status=400, param="response_format")
    assert "finite" in message
    expect_error(http.post("/generate", json=generation_body("/generate", do_sample=True,
                                                             grammar={"type": "json", "value": schema})),
                 "/generate", status=422)
    for choice in ("auto", "required"):
        tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        expect_error(http.post(CHAT, json={"messages": USER, "max_tokens": 4, "tools": tools, "tool_choice": choice}),
                     CHAT, status=400, param="tools[0].function.parameters")


def test_a_regex_that_matches_nothing_is_a_4xx(http):
    body = generation_body("/generate", do_sample=True, grammar={"type": "regex", "value": "[^\\s\\S]"})
    expect_error(http.post("/generate", json=body), "/generate", status=422)


def test_recursive_schemas_with_a_way_out_still_work(http):
    tree = {"$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "maxItems": 2,
                                                                              "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"}
    fmt = {"type": "json_schema", "json_schema": {"name": "tree", "schema": tree}}
    resp = http.post(CHAT, json={"messages": USER, "max_tokens": 8, "temperature": 1.0, "response_format": fmt})
    assert resp.status_code == 200, resp.text


# -------------------------------------------------------------------------------- routes and embeddings
@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404), ("GET", "/v1/nope", 404), ("PUT", "/generate", 405), ("DELETE", CHAT, 405),
    ("POST", "/health", 405), ("GET", "/tokenize", 405),
])
def test_unknown_routes_and_methods_answer_in_the_envelope(http, method, path, status):
    resp = http.request(method, path)
    if path.startswith(("/v1/", "/tokenize")):
        expect_error(resp, "/v1/", status=status)
    else:
        expect_error(resp, "/", status=status)
    if status == 405:
        assert resp.headers["allow"]


@pytest.mark.slow
def test_embeddings_route_refuses_hostile_input(embedding_model_dir):
    path = "/v1/embeddings"
    with start_runtime_server(embedding_model_dir) as srv, httpx.Client(base_url=srv.base_url, timeout=120) as client:
        for ids in ([10**19], [-1], [[2**40]], [[-5, 3]], [2**63]):
            expect_error(client.post(path, json={"input": ids}), path, status=422, param="input")
        expect_error(post_raw(client, path, b'{"input": "\\ud800"}'), path, status=400, param="input")
        expect_error(post_raw(client, path, b"[" * DEEP + b"]" * DEEP), path, status=400)
        expect_error(post_raw(client, path, b'{"input": NaN}'), path, status=400)
        expect_error(client.post(path, json={"input": "x", "dimensions": HUGE}), path, status=400, param="dimensions")
        assert client.post(path, json={"input": ["fine", [1, 2]]}).status_code == 400
        assert client.get("/health").status_code == 200
        log = srv.log()
    assert "Traceback" not in log, log[-4000:]


@pytest.mark.parametrize("target", ["/%ff", "/v1/%00", "/generate%0a", "//generate", "/generate/..%2f..%2fetc",
                                    "/health?%ff=%ff&x", "/v1/models?" + "a=1&" * 2000, "/" + "a" * 8000])
def test_odd_request_targets_never_break_the_server(server, http, target):
    from tests.security.rawhttp import raw_request

    status, head, content, _ = raw_request(server.base_url, "GET", target, {}, None)
    assert status < 500, (status, content[:300])
    assert b"Traceback" not in content
    if status >= 400 and b"application/json" in head:
        assert "error" in json.loads(content)
