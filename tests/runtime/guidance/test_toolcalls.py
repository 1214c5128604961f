"""Generated text → OpenAI tool_calls: whole and streamed agree, and the openai SDK's own types accept them."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessage

from runtime.guidance import ToolCallStream, parse_tool_calls


def call(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


TRICKY = '{"q": "a } ] \\" <tool_call> \\\\", "n": [1, {"x": {}}]}'
TEXTS = [
    "plain answer, no calls",
    call("add", '{"a": 1, "b": 2}'),
    call("add", '{"a": 1, "b": 2}') + "\n" + call("search", TRICKY),
    "Let me look.\n" + call("now", "{}"),
    "less < than and <tool not a call",
    call("add", '{"a": 1, "b": 2}') + '\n<tool_call>\n{"name": "ad',  # the next call cut off by max_tokens
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_streaming_equals_whole(text, chunk):
    whole = parse_tool_calls(text)
    stream = ToolCallStream()
    content, deltas = "", []
    for i in range(0, len(text), chunk):
        c, d = stream.feed(text[i : i + chunk])
        content += c
        deltas += d
    c, d = stream.finish()
    content += c
    deltas += d
    assert content == whole.content
    # Reassemble the deltas the way the openai SDK's stream helpers do.
    calls: dict[int, dict] = {}
    for d in deltas:
        slot = calls.setdefault(d["index"], {"id": None, "name": None, "arguments": ""})
        if "id" in d:
            assert slot["id"] is None and d["type"] == "function" and d["function"]["arguments"] == ""
            slot["id"], slot["name"] = d["id"], d["function"]["name"]
        else:
            assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
        slot["arguments"] += d["function"]["arguments"]
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(t.name, t.arguments) for t in whole.tool_calls]


def test_arguments_are_json_strings_with_unique_ids():
    parsed = parse_tool_calls(TEXTS[2])
    assert [c.name for c in parsed.tool_calls] == ["add", "search"]
    assert json.loads(parsed.tool_calls[1].arguments) == json.loads(TRICKY)
    ids = [c.id for c in parsed.tool_calls] + [c.id for c in parse_tool_calls(TEXTS[2]).tool_calls]
    assert len(set(ids)) == 4 and all(i.startswith("call_") for i in ids)
    assert parsed.content == ""


def test_text_that_only_looks_like_a_trigger_is_content():
    assert parse_tool_calls(TEXTS[4]).content == TEXTS[4]
    assert parse_tool_calls("ends with <tool").content == "ends with <tool"
    assert parse_tool_calls("<tool_call> then no header").content == "<tool_call> then no header"


def test_the_cut_off_start_of_a_next_call_is_not_content():
    """After a call the grammar allows only more calls, so an answer that max_tokens cut off inside the next call's
    trigger or header leaves no markup in content (SmolLM2 with tool_choice "required" ended on content "<tool")."""
    for tail in ("\n<tool", "\n<tool_call>", '\n<tool_call>\n{"name": "ad'):
        parsed = parse_tool_calls(call("add", '{"a": 1, "b": 2}') + tail)
        assert (parsed.content, [c.name for c in parsed.tool_calls]) == ("", ["add"]), tail


def test_truncated_call_is_reported_incomplete():
    parsed = parse_tool_calls(call("add", '{"a": 1, "b": 2}')[:-20])
    [tc] = parsed.tool_calls
    assert not tc.complete and tc.arguments.startswith('{"a": 1')


def test_openai_sdk_types_accept_the_shapes():
    parsed = parse_tool_calls(TEXTS[2])
    message = ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": parsed.content or None, "tool_calls": parsed.openai_tool_calls()}
    )
    assert message.tool_calls[0].function.arguments == '{"a": 1, "b": 2}'
    stream = ToolCallStream()
    _, deltas = stream.feed(TEXTS[1])
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "tiny",
            "choices": [{"index": 0, "delta": {"tool_calls": deltas[:1]}, "finish_reason": None}],
        }
    )
    assert chunk.choices[0].delta.tool_calls[0].function.name == "add"
