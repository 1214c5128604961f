"""Guidance against a live runtime server on the random tiny model, through the clients users point at it.

The random-weights model never writes valid JSON, a matching regex or a well-formed tool call by chance (see
``test_compiler.test_unconstrained_tiny_model_does_not_write_json``): everything that validates here was
enforced by the grammar, per sequence, inside the engine's shared batch.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.runtime.guidance.schemas import REGEXES, SCHEMAS, TOOL_SCHEMAS, TOOLS, Reading, check_tool_calls

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


# ------------------------------------------------------------------------------------------------ grammars


@pytest.mark.slow
def test_hundred_requests_with_assorted_schemas_all_validate(base_url: str):
    """100 concurrent constrained requests over the three APIs, with free requests mixed into the same batches."""

    def one(i: int) -> tuple[dict, str]:
        schema = SCHEMAS[i % len(SCHEMAS)]
        prompt = f"Request {i}: describe item {i * 7 % 13}"
        with httpx.Client(base_url=base_url, timeout=300) as http:
            route = i % 3
            if route == 0:
                r = http.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 200, "grammar": {"type": "json", "value": schema}}})
                r.raise_for_status()
                return schema, r.json()["generated_text"]
            if route == 1:
                r = http.post("/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": prompt}], "max_tokens": 200, "temperature": 0,
                    "response_format": {"type": "json_schema", "json_schema": {"name": f"s{i % len(SCHEMAS)}", "schema": schema, "strict": True}},
                })
                r.raise_for_status()
                choice = r.json()["choices"][0]
                assert choice["finish_reason"] == "stop", choice
                return schema, choice["message"]["content"]
            r = http.post("/v1/completions", json={
                "prompt": prompt, "max_tokens": 200, "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            })
            r.raise_for_status()
            return schema, r.json()["choices"][0]["text"]

    def free(i: int) -> str:
        with httpx.Client(base_url=base_url, timeout=300) as http:
            r = http.post("/generate", json={"inputs": f"free {i}", "parameters": {"max_new_tokens": 40}})
            r.raise_for_status()
            return r.json()["generated_text"]

    with ThreadPoolExecutor(max_workers=24) as pool:
        frees = [pool.submit(free, i) for i in range(8)]
        results = list(pool.map(one, range(100)))
        assert all(isinstance(f.result(), str) for f in frees)
    for schema, text in results:
        jsonschema.validate(json.loads(text), schema)


def test_regex_outputs_match_generate_and_stream(base_url: str, http: httpx.Client):
    for regex in REGEXES:
        r = http.post("/generate", json={"inputs": "pick", "parameters": {"max_new_tokens": 40, "grammar": {"type": "regex", "value": regex}}})
        assert r.status_code == 200, r.text
        assert re.fullmatch(regex, r.json()["generated_text"]), (regex, r.text)
    with http.stream("POST", "/generate_stream", json={"inputs": "date", "parameters": {"max_new_tokens": 40, "grammar": {"type": "regex", "value": REGEXES[3]}}}) as resp:
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    final = events[-1]
    assert re.fullmatch(REGEXES[3], final["generated_text"])
    assert "".join(e["token"]["text"] for e in events) == final["generated_text"]


@pytest.mark.parametrize("extra", [{"min_tokens": 40, "temperature": 0.7, "seed": 3}, {"ignore_eos": True, "temperature": 0.7, "seed": 3}])
def test_grammar_decides_the_end_even_with_min_tokens_or_ignore_eos(http: httpx.Client, extra):
    """Suppressing EOS on a complete grammar would leave no allowed token (NaN sampling, a failed batch)."""
    schema = SCHEMAS[1]
    r = http.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 60, **extra,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    })
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_logprobs_of_masked_tokens_stay_json(openai_client, http: httpx.Client):
    """Masked tokens have logprob -inf, which JSON cannot carry: top logprobs report them as -9999.0."""
    schema = SCHEMAS[1]
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=40, temperature=0, logprobs=True, top_logprobs=5,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    tops = [t.logprob for c in r.choices[0].logprobs.content for t in c.top_logprobs]
    assert tops and min(tops) == -9999.0
    g = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 40, "details": True, "top_n_tokens": 3, "grammar": {"type": "json", "value": schema}}})
    assert g.status_code == 200, g.text
    jsonschema.validate(json.loads(g.json()["generated_text"]), schema)


def test_json_object_mode_on_chat(openai_client):
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=100, temperature=0, response_format={"type": "json_object"}
    )
    if r.choices[0].finish_reason == "stop":  # any object: the random model may take long to close it
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.startswith("{")


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("grammar", "words"),
    [
        ({"type": "json", "value": {"type": "object", "properties": {"a": {"type": "nosuch"}}}}, "invalid JSON Schema"),
        ({"type": "json", "value": {"type": "integer", "minimum": 3, "maximum": 1}}, "minimum greater than maximum"),
        ({"type": "regex", "value": "(unclosed"}, "invalid regex"),
        ({"type": "yaml", "value": "a: 1"}, "must be one of"),
    ],
)
def test_bad_grammar_is_422_on_tgi_routes(http: httpx.Client, grammar, words):
    for route in ("/generate", "/generate_stream", "/"):
        r = http.post(route, json={"inputs": "x", "parameters": {"grammar": grammar}})
        assert r.status_code == 422, (route, r.text)
        assert r.json()["error_type"] == "validation" and words in r.json()["error"]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": 5}}}}, "response_format", "invalid JSON Schema"),
        ({"tools": TOOLS, "tool_choice": "lookup"}, "tool_choice", "'lookup', which is not in `tools`"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not in `tools`"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "tools", "mutually exclusive"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}]}, "tools[0].function.parameters", "invalid JSON Schema"),
    ],
)
def test_bad_guidance_is_400_on_openai_routes(http: httpx.Client, extra, param, words):
    r = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 5, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and words in err["message"]
    assert err["param"].startswith(param)


def test_bad_response_format_on_completions_is_400(http: httpx.Client):
    r = http.post("/v1/completions", json={"prompt": "x", "response_format": {"type": "xml"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.type"


# ------------------------------------------------------------------------------------------- tools: openai


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_openai_sdk_tool_calls_non_stream(openai_client, choice):
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=120, temperature=0,
        parallel_tool_calls=False,
    )
    choice0 = r.choices[0]
    assert choice0.finish_reason == "tool_calls"
    check_tool_calls(choice0.message.tool_calls, names=("add",) if isinstance(choice, dict) else tuple(TOOL_SCHEMAS))
    assert len(choice0.message.tool_calls) == 1
    assert not choice0.message.content


def test_openai_sdk_parallel_calls_get_unique_ids(openai_client):
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=300, temperature=0
    )
    choice = r.choices[0]
    calls = choice.message.tool_calls
    assert choice.finish_reason in ("tool_calls", "length")
    if choice.finish_reason == "length":  # the random model kept calling; the last call was cut by max_tokens
        calls = calls[:-1]
    check_tool_calls(calls)


def test_openai_sdk_auto_lets_the_model_answer_in_text(openai_client):
    """auto is not required (TGI #2549): left to choose, the random model answers in text."""
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice="auto", max_tokens=30, temperature=0
    )
    choice = r.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert "<tool_call>" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_tool_choice_none_generates_freely_without_offering_tools(openai_client):
    kwargs = {"model": "tiny", "messages": MESSAGES, "max_tokens": 5, "temperature": 0}
    none = openai_client.chat.completions.create(tools=TOOLS, tool_choice="none", **kwargs)
    plain = openai_client.chat.completions.create(**kwargs)
    auto = openai_client.chat.completions.create(tools=TOOLS, tool_choice="auto", **kwargs)
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content == plain.choices[0].message.content  # same prompt, no constraint
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens < auto.usage.prompt_tokens  # tools described


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}, "auto"])
def test_openai_sdk_tool_calls_stream(openai_client, choice):
    stream = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=150, temperature=0,
        parallel_tool_calls=False, stream=True,
    )
    chunks = list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if choice == "auto":
        assert deltas == [] and content and finishes in (["stop"], ["length"])
        return
    assert finishes == ["tool_calls"]
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function" and first.function.name
    assert all(d.id is None and d.function.name is None and d.index == 0 for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), TOOL_SCHEMAS[first.function.name])
    assert content == ""
    # the SDK's own accumulation agrees with the non-stream answer shape
    with openai_client.chat.completions.stream(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=150, temperature=0,
        parallel_tool_calls=False,
    ) as helper:
        final = helper.get_final_completion()
    check_tool_calls(final.choices[0].message.tool_calls)
    assert final.choices[0].message.tool_calls[0].function.arguments == arguments


def test_conversation_with_tool_results_is_accepted(openai_client):
    first = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0,
        parallel_tool_calls=False,
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *MESSAGES,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    second = openai_client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, max_tokens=10, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


# --------------------------------------------------------------------------------- structured output: SDKs


def test_openai_sdk_parse_returns_a_pydantic_object(openai_client):
    r = openai_client.chat.completions.parse(
        model="tiny", messages=MESSAGES, response_format=Reading, max_tokens=120, temperature=0
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Reading) and -30 <= parsed.celsius <= 45


def test_huggingface_hub_text_generation_with_grammar(base_url: str):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=base_url)
    schema = Reading.model_json_schema()
    text = client.text_generation("Weather?", grammar={"type": "json", "value": schema}, max_new_tokens=120)
    Reading.model_validate_json(text)
    out = client.text_generation("Phone?", grammar={"type": "regex", "value": REGEXES[0]}, max_new_tokens=20, details=True)
    assert re.fullmatch(REGEXES[0], out.generated_text)


def test_huggingface_hub_chat_completion_with_tools(base_url: str):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=base_url)
    out = client.chat_completion(messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=160, temperature=0)
    finish, calls = out.choices[0].finish_reason, out.choices[0].message.tool_calls
    assert finish in ("tool_calls", "length")  # parallel calls allowed: the random model may keep calling
    complete = calls if finish == "tool_calls" else calls[:-1]
    assert complete
    for call in complete:
        assert call.function.name in TOOL_SCHEMAS and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])
    named = client.chat_completion(messages=MESSAGES, tools=TOOLS, tool_choice={"function": {"name": "add"}}, max_tokens=80)
    assert named.choices[0].message.tool_calls[0].function.name == "add"
    chunks = list(client.chat_completion(messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=160, stream=True))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    calls: dict[int, dict] = {}  # parallel calls are allowed here: reassemble per index
    for d in deltas:
        if d.id is not None:
            assert d.id.startswith("call_") and d.function.name in TOOL_SCHEMAS and d.index not in calls
            calls[d.index] = {"name": d.function.name, "arguments": ""}
        calls[d.index]["arguments"] += d.function.arguments or ""
    assert calls and chunks[-1].choices[0].finish_reason in ("tool_calls", "length")
    complete = list(calls.values()) if chunks[-1].choices[0].finish_reason == "tool_calls" else list(calls.values())[:-1]
    assert complete
    for call in complete:
        jsonschema.validate(json.loads(call["arguments"]), TOOL_SCHEMAS[call["name"]])


def test_langchain_bind_tools_and_structured_output(base_url: str):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{base_url}/v1", api_key="unused", model="tiny", temperature=0, max_tokens=120, max_retries=0)

    class Add(BaseModel):
        """Add two digits."""

        a: int = Field(ge=0, le=9)
        b: int = Field(ge=0, le=9)

    msg = llm.bind_tools([Add], tool_choice="Add").invoke("What is 2 + 3?")
    [call] = msg.tool_calls
    assert call["name"] == "Add" and 0 <= call["args"]["a"] <= 9 and call["id"].startswith("call_")
    streamed = None
    for chunk in llm.bind_tools([Add], tool_choice="required", parallel_tool_calls=False).stream("What is 2 + 3?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.tool_calls and streamed.tool_calls[0]["name"] == "Add"

    reading = llm.with_structured_output(Reading).invoke("Weather in Oslo?")
    assert isinstance(reading, Reading)


class AddDigits(BaseModel):
    a: int = Field(ge=0, le=9)
    b: int = Field(ge=0, le=9)


def test_llamaindex_openai_like_tool_call(base_url: str):
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai_like import OpenAILike

    def add(a: int, b: int) -> int:
        """Add two digits."""
        return a + b

    llm = OpenAILike(model="tiny", api_base=f"{base_url}/v1", api_key="unused", is_chat_model=True,
                     is_function_calling_model=True, max_tokens=120, temperature=0)
    tool = FunctionTool.from_defaults(fn=add, fn_schema=AddDigits)
    response = llm.chat_with_tools([tool], user_msg="Add 2 and 3", tool_required=True)
    [selection] = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "add" and selection.tool_id.startswith("call_")
    assert set(selection.tool_kwargs) == {"a", "b"} and all(0 <= v <= 9 for v in selection.tool_kwargs.values())
