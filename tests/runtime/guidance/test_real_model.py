"""Guided generation on a real model: SmolLM2-135M-Instruct behind the session's shared server.

On random weights only the grammar writes the JSON, so validity is all a test can check. A real model writes it
with the grammar: the output must still validate, and it must also say something (the city is Paris, the war ended
in 1945, 2 plus 3 calls `add` with 2 and 3). That is where a grammar which fights the model shows, for example one
that makes it write the properties in another order than the schema's.
"""

from __future__ import annotations

import itertools
import json
import re

import httpx
import jsonschema
import pytest

from tests.fixtures.models import FRANCE_QUESTION, RuntimeServer, chat_prompt
from tests.runtime.guidance.schemas import TOOLS, Reading, check_tool_calls

pytestmark = [pytest.mark.realmodel]

CAPITAL = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["city", "country", "population_millions"],
    "additionalProperties": False,
}
YEAR = r"(19|20)[0-9]{2}"


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def base_url(real_model_server: RuntimeServer) -> str:
    return real_model_server.base_url


def _chat(openai_client, question: str, **kwargs):
    return openai_client.chat.completions.create(model="tgi", messages=ask(question), temperature=0, **kwargs)


def test_response_format_json_schema_and_json_object(openai_client) -> None:
    reply = _chat(openai_client, "What is the capital of France? Reply in JSON with city, country and population "
                  "in millions.", max_tokens=60, response_format={
                      "type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True}})
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    capital = json.loads(choice.message.content)
    jsonschema.validate(capital, CAPITAL)
    assert capital["city"] == "Paris" and list(capital) == list(CAPITAL["properties"]), capital

    reply = _chat(openai_client, 'Reply with a JSON object with one key, "capital", the capital of France.',
                  max_tokens=40, response_format={"type": "json_object"})
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    answer = json.loads(choice.message.content)
    assert isinstance(answer, dict) and "Paris" in answer.values(), answer


def test_the_sdks_parse_gives_the_pydantic_model(openai_client) -> None:
    """`chat.completions.parse(response_format=Reading)`: the SDK sends the model's schema (city, celsius, sky, in
    that order) and parses the answer back. With the properties sorted the model wrote "celsius" first and then
    named the city ")"."""
    reply = openai_client.chat.completions.parse(model="tgi", messages=ask("What is the weather in Paris?"),
                                                 response_format=Reading, max_tokens=60, temperature=0)
    reading = reply.choices[0].message.parsed
    assert isinstance(reading, Reading), reply
    assert reading.city == "Paris", reading


def test_tgi_grammar_json_and_regex(http: httpx.Client, real_model_tokenizer) -> None:
    def generate(question: str, grammar: dict, **parameters) -> dict:
        resp = http.post("/generate", json={"inputs": chat_prompt(real_model_tokenizer, ask(question)),
                                            "parameters": {"grammar": grammar, **parameters}})
        assert resp.status_code == 200, resp.text
        return resp.json()

    capital = generate("What is the capital of France? Reply in JSON with city, country and population in millions.",
                       {"type": "json", "value": CAPITAL}, max_new_tokens=60)
    body = json.loads(capital["generated_text"])
    jsonschema.validate(body, CAPITAL)
    assert body["city"] == "Paris", body

    year = generate("In what year did World War II end?", {"type": "regex", "value": YEAR}, max_new_tokens=10,
                    details=True)
    assert re.fullmatch(YEAR, year["generated_text"]), year
    assert year["generated_text"] == "1945", year
    assert year["details"]["finish_reason"] == "eos_token", year  # the grammar ended it, not max_new_tokens


def test_tool_calls_required_named_and_one_at_most(openai_client) -> None:
    def calls(question: str, **kwargs) -> list[tuple[str, dict]]:
        reply = _chat(openai_client, question, tools=TOOLS, max_tokens=100, **kwargs)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content, choice
        check_tool_calls(choice.message.tool_calls)
        return [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]

    two_cities = "What is the weather in Paris and in London?"
    both = calls(two_cities, tool_choice="required")
    assert [name for name, _ in both] == ["get_weather", "get_weather"], both
    assert {args["city"] for _, args in both} == {"Paris", "London"}, both
    [(name, args)] = calls(two_cities, tool_choice="required", parallel_tool_calls=False)
    assert (name, args["city"]) == ("get_weather", "Paris")
    [(name, args)] = calls("What is 2 plus 3?", tool_choice={"type": "function", "function": {"name": "add"}})
    assert (name, args) == ("add", {"a": 2, "b": 3})


def test_tool_calls_cut_off_by_max_tokens_leave_no_markup(openai_client) -> None:
    """Parallel calls allowed, the model calls get_weather again and again. Cut off by max_tokens inside the next
    call's trigger or header, the answer is the complete call and nothing else: that start is neither a call nor
    content (it came back as content "<tool" and '<tool_call>\n{"name": "g')."""
    question = "What is the weather in Paris?"
    whole = _chat(openai_client, question, tools=TOOLS, tool_choice="required", max_tokens=60, logprobs=True)
    tokens = [t.token for t in whole.choices[0].logprobs.content]
    text = "".join(tokens)
    again = text.index("<tool_call>", 1)  # where the model starts its second call
    header_end = text.index('"arguments"', again)
    cuts = {}
    for count, end in enumerate(itertools.accumulate(len(t) for t in tokens), start=1):
        if again < end < again + len("<tool_call>"):
            cuts.setdefault("trigger", count)
        elif again + len("<tool_call>") < end < header_end:
            cuts.setdefault("header", count)
    assert set(cuts) == {"trigger", "header"}, tokens
    first_call = whole.choices[0].message.tool_calls[0]
    for where, max_tokens in cuts.items():
        choice = _chat(openai_client, question, tools=TOOLS, tool_choice="required", max_tokens=max_tokens).choices[0]
        assert choice.finish_reason == "length", (where, choice)
        assert choice.message.content is None, (where, choice)
        assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
            (first_call.function.name, first_call.function.arguments)], (where, choice)
    check_tool_calls([first_call])
    assert json.loads(first_call.function.arguments)["city"] == "Paris"


def test_tool_choice_auto_answers_in_text_or_calls_either_way_well_formed(openai_client) -> None:
    for question in (FRANCE_QUESTION, "What is the weather in Paris?", "What is 2 plus 3?"):
        choice = _chat(openai_client, question, tools=TOOLS, tool_choice="auto", max_tokens=40).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls", (question, choice)
            check_tool_calls(choice.message.tool_calls)
        else:
            assert choice.finish_reason in ("stop", "length"), (question, choice)
            assert choice.message.content and "<tool" not in choice.message.content, (question, choice)
        if question == FRANCE_QUESTION:  # nothing to call for: the model answers
            assert not choice.message.tool_calls and "Paris" in choice.message.content, choice
