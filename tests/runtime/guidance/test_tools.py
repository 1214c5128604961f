"""tools / tool_choice: validation, the tool-call grammar per choice, chat template input."""

from __future__ import annotations

import json

import pytest
from jinja2 import Environment

from runtime.guidance import ToolError, parse_tool_calls, plan_tools, prepare_chat
from runtime.guidance.tools import TRIGGER

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["a", "b"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now"}}
TOOLS = [WEATHER, ADD, NOW]


def call(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def matcher(compiler, plan):
    return compiler.factory(plan.grammar_spec())()


def complete(constraint, text: str) -> bool:
    """Does the grammar accept ``text`` as a whole answer (followed by EOS)?"""
    return constraint.accept_text(text) and constraint.accept(constraint.matcher.stop_token_ids[0]) and constraint.is_terminated()


# -- validation ---------------------------------------------------------------------------------------------


def test_no_tools_or_none_means_no_plan():
    assert plan_tools(None) is None
    assert plan_tools([], "auto") is None
    assert plan_tools(TOOLS, "none") is None


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"tools": TOOLS, "tool_choice": "lookup"}, "tool_choice", "'lookup', which is not in `tools`"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not in `tools`"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice.function.name", "required"),
        ({"tools": TOOLS, "tool_choice": 3}, "tool_choice", "must be"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs `tools`"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "duplicate"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "1-64"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", "function"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nosuch"}}}]}, "tools[0].function.parameters", "invalid JSON Schema"),
        ({"tools": TOOLS, "has_grammar": True}, "tools", "mutually exclusive"),
        ({"tools": TOOLS, "tool_choice": "none", "has_grammar": True}, "tools", "mutually exclusive"),
    ],
)
def test_bad_tool_requests_are_typed_errors(kwargs, param, words):
    with pytest.raises(ToolError) as info:
        plan_tools(kwargs.pop("tools"), kwargs.pop("tool_choice", None), **kwargs)
    assert info.value.param == param
    assert words in info.value.message


def test_choice_forms():
    assert plan_tools(TOOLS).mode == "auto"
    assert plan_tools(TOOLS, "required").mode == "required"
    named = plan_tools(TOOLS, {"type": "function", "function": {"name": "add"}})
    assert (named.mode, named.forced) == ("function", "add")
    assert plan_tools(TOOLS, "add").forced == "add"  # TGI's bare-name form
    assert plan_tools(TOOLS, parallel_tool_calls=False).parallel is False


# -- grammar per choice -------------------------------------------------------------------------------------


def test_auto_allows_text_or_calls(compiler):
    plan = plan_tools(TOOLS, "auto")
    assert complete(matcher(compiler, plan), "It is sunny today.")
    assert complete(matcher(compiler, plan), call("get_weather", '{"city": "Paris", "unit": "c"}'))
    assert complete(matcher(compiler, plan), "Let me check.\n" + call("add", '{"a": 1, "b": 2}'))
    assert complete(matcher(compiler, plan), call("add", '{"a": 1, "b": 2}') + "\n" + call("now", "{}"))
    # but never a malformed call, text after the calls, or an argument out of bounds
    assert not matcher(compiler, plan).accept_text(call("add", '{"a": 12, "b": 2}'))
    assert not complete(matcher(compiler, plan), call("add", '{"a": 1}'))
    assert not complete(matcher(compiler, plan), call("now", "{}") + "trailing words")
    assert not complete(matcher(compiler, plan), call("unknown_fn", "{}"))


def test_required_demands_a_call(compiler):
    plan = plan_tools(TOOLS, "required")
    assert not complete(matcher(compiler, plan), "Just text.")
    assert not complete(matcher(compiler, plan), "")
    assert complete(matcher(compiler, plan), call("now", "{}"))
    assert complete(matcher(compiler, plan), call("now", "{}") + "\n" + call("add", '{"a": 3, "b": 4}'))


def test_required_without_parallel_stops_after_one(compiler):
    plan = plan_tools(TOOLS, "required", parallel_tool_calls=False)
    assert complete(matcher(compiler, plan), call("now", "{}"))
    assert not complete(matcher(compiler, plan), call("now", "{}") + "\n" + call("now", "{}"))


def test_named_function_only(compiler):
    plan = plan_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert complete(matcher(compiler, plan), call("get_weather", '{"city": "Oslo", "unit": "f"}'))
    assert not complete(matcher(compiler, plan), call("add", '{"a": 3, "b": 4}'))
    assert not complete(matcher(compiler, plan), "text")


def test_arguments_are_written_in_the_order_the_parameters_list_them(compiler):
    """As in response_format schemas: the client's property order is the order the call's arguments come in."""
    unit_first = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "city": {"type": "string"}},
        "required": ["unit", "city"]}}}
    plan = plan_tools([unit_first], "required")
    assert complete(matcher(compiler, plan), call("f", '{"unit": "c", "city": "Oslo"}'))
    assert not matcher(compiler, plan).accept_text('<tool_call>\n{"name": "f", "arguments": {"city"')


def test_arguments_never_hold_raw_control_characters(compiler):
    """RFC 8259 forbids U+0000-U+001F unescaped in a string; the length-bounded ``city`` must refuse them too."""
    plan = plan_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    for bad in ("\x1d", "\x00", "\t", "\x1f"):
        assert not matcher(compiler, plan).accept_text(call("get_weather", '{"city": "Pa' + bad + 'ris", "unit": "c"}'))
    assert complete(matcher(compiler, plan), call("get_weather", '{"city": "Zürich", "unit": "c"}'))


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_random_model_produces_parseable_calls(compiler, tiny_lm, choice):
    plan = plan_tools(TOOLS, choice, parallel_tool_calls=False)
    [(text, finished)] = tiny_lm.generate(["What is 2+3?"], [matcher(compiler, plan)], max_new_tokens=120)
    assert finished, text
    parsed = parse_tool_calls(text)
    assert parsed.content == ""
    [tc] = parsed.tool_calls
    assert tc.complete and tc.name in plan.names
    args = json.loads(tc.arguments)
    if tc.name == "add":
        assert 0 <= args["a"] <= 9 and 0 <= args["b"] <= 9


def test_random_model_in_auto_mode_answers_in_text(compiler, tiny_lm):
    """auto is not required: the random model, left to choose, writes text — and no tool-call markup."""
    plan = plan_tools(TOOLS, "auto")
    [(text, _finished)] = tiny_lm.generate(["Tell me a story"], [matcher(compiler, plan)], max_new_tokens=30)
    parsed = parse_tool_calls(text)
    assert parsed.tool_calls == [] and parsed.content == text and TRIGGER not in text


def test_auto_mode_completes_a_call_the_model_starts(compiler, tiny_lm):
    """Once the model writes the trigger in auto mode, the grammar carries it through a valid call of one of
    the tools, and nothing follows the call (the forced prefix stands in for a model that chose to call)."""
    plan = plan_tools(TOOLS, "auto", parallel_tool_calls=False)
    [(text, finished)] = tiny_lm.generate(["Weather?"], [matcher(compiler, plan)], max_new_tokens=120, forced_prefix=TRIGGER)
    assert finished, text
    parsed = parse_tool_calls(text)
    [tc] = parsed.tool_calls
    assert tc.complete and tc.name in plan.names and parsed.content == ""
    json.loads(tc.arguments)


# -- chat template input ------------------------------------------------------------------------------------


def render(template: str, messages, tools=None) -> str:
    return Environment().from_string(template).render(
        messages=messages, tools=tools, bos_token="<s>", eos_token="</s>", add_generation_prompt=True
    )


HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
]


def test_plain_template_gets_a_tool_prompt_and_rendered_calls(tiny_tokenizer):
    template = tiny_tokenizer.chat_template
    messages, tools = prepare_chat(HISTORY, plan=plan_tools(TOOLS, "auto"), template=template)
    assert tools is None  # the tiny template does not read `tools`; they are described in the system turn
    assert messages[0]["role"] == "system" and '"name": "get_weather"' in messages[0]["content"]
    text = render(template, messages)
    assert call("get_weather", '{"city": "Paris", "unit": "c"}') in text
    assert "18 C" in text and "None" not in text


def test_tool_aware_template_receives_tools_and_decoded_calls():
    template = (
        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "{{ c.function.name }}({{ c.function.arguments.city }}){% endfor %}{% else %}{{ m.content }}{% endif %}"
        "{% if m.role == 'tool' %}!{% endif %}\n{% endfor %}"
    )
    messages, tools = prepare_chat(HISTORY, plan=plan_tools(TOOLS, "required"), template=template)
    assert [t["function"]["name"] for t in tools] == ["get_weather", "add", "now"]
    text = render(template, messages, tools)
    assert text.startswith("[get_weather][add][now]") and "get_weather(Paris)" in text and "tool:18 C!" in text


def test_tool_choice_none_offers_no_tools_but_keeps_history(tiny_tokenizer):
    messages, tools = prepare_chat(HISTORY, plan=plan_tools(TOOLS, "none"), template=tiny_tokenizer.chat_template)
    assert tools is None and messages[0]["role"] == "user"
    assert "<tool_call>" in messages[1]["content"]


@pytest.mark.parametrize("calls", [[{"bogus": 1}], "call", [{"function": {"name": "f", "arguments": 3}}]])
def test_malformed_history_tool_calls_are_typed_errors(calls):
    messages = [{"role": "assistant", "content": None, "tool_calls": calls}]
    with pytest.raises(ToolError) as info:
        prepare_chat(messages, plan=None, template="{{ messages }}")
    assert info.value.param.startswith("messages[0].tool_calls")
