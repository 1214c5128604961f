"""Tool calling: validate ``tools`` / ``tool_choice``, build the tool-call grammar, prepare the chat template input.

Wire format the model writes (Hermes / Qwen 2.5 style, which many chat templates already teach)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Parallel calls are the same blocks separated by a newline. :mod:`runtime.guidance.toolcalls` turns that text
into OpenAI ``tool_calls``.

Grammar per ``tool_choice`` (an xgrammar structural tag; the arguments object of each function is constrained
by that function's ``parameters`` schema):

* ``auto``: optional free text (which may not contain the trigger ``<tool_call>``), then zero or more tool calls,
  then the end. A plain text answer and a tool call are both valid, so ``auto`` never forces a call
  (TGI issue #2549) — the model decides.
* ``required``: one or more tool calls and nothing else.
* a named function (string or ``{"type": "function", "function": {"name"}}``): exactly one call of it.
* ``none``: no grammar and no tools offered — the template does not receive ``tools`` and no tool prompt is
  added, because describing functions the model may not call only invites it to write tool-call text that would
  come back as plain content. Earlier tool calls in the conversation are still rendered.

Arguments are constrained to each function's ``parameters`` schema whatever its ``strict`` flag says: a
call the client cannot parse helps no one. ``parallel_tool_calls: false`` stops after the first call. ``tool_choice`` naming an unknown function, an
invalid ``parameters`` schema, duplicate names, or tools together with a grammar / ``response_format`` are
:class:`ToolError` s raised before generation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
import jinja2.meta

from runtime.guidance.compiler import check_schema, schema_ebnf
from runtime.guidance.errors import InvalidGrammarError, ToolError
from runtime.guidance.specs import GrammarSpec, canonical_json
from runtime.jsonbody import DEFAULT_MAX_JSON_DEPTH, JSONInputError, decode

TRIGGER = "<tool_call>"
CALL_END_TAG = "</tool_call>"
CALL_PREFIX = '<tool_call>\n{"name": "'
ARGUMENTS_PREFIX = '", "arguments": '
CALL_SUFFIX = "}\n</tool_call>"
CALL_SEPARATOR = "\n"

# Parameters of a function that declares none: an empty object (OpenAI's meaning of a missing schema).
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

DEFAULT_TOOL_PROMPT = (
    "You can call the functions listed below. To call one, reply with a block of exactly this form and "
    "nothing after it:\n"
    "<tool_call>\n"
    '{"name": <function name>, "arguments": <arguments as a JSON object>}\n'
    "</tool_call>\n"
    "Functions:"
)

ToolChoiceMode = Literal["auto", "required", "function"]


@dataclass(frozen=True)
class ToolPlan:
    """A validated tools request: what the template gets and what the output is constrained to."""

    tools: tuple[dict[str, Any], ...]  # normalised OpenAI tool objects, in request order
    mode: ToolChoiceMode
    forced: str | None  # the function name when mode == "function"
    parallel: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t["function"]["name"] for t in self.tools)

    def grammar_spec(self) -> GrammarSpec:
        """The structural-tag grammar (canonical JSON, so identical tool sets share one compiled grammar).

        Each function's arguments are its ``parameters`` schema converted to EBNF in the canonical JSON layout
        (see :mod:`runtime.guidance.compiler`). Raises :class:`ToolError` for a schema xgrammar cannot enforce.
        """
        tags = []
        for i, t in enumerate(self.tools):
            if self.mode == "function" and t["function"]["name"] != self.forced:
                continue
            param = f"tools[{i}].function.parameters"
            try:
                ebnf = schema_ebnf(t["function"].get("parameters") or NO_PARAMETERS, param=param)
            except InvalidGrammarError as exc:
                raise ToolError(exc.message, param=exc.param) from exc
            tags.append({
                "type": "tag",
                "begin": CALL_PREFIX + t["function"]["name"] + ARGUMENTS_PREFIX,
                "content": {"type": "grammar", "grammar": ebnf},
                "end": CALL_SUFFIX,
            })
        calls: dict[str, Any]
        if self.mode == "function":
            calls = tags[0]
        else:
            calls = {
                "type": "tags_with_separator",
                "tags": tags,
                "separator": CALL_SEPARATOR,
                "at_least_one": self.mode == "required",
                "stop_after_first": not self.parallel,
            }
        if self.mode == "auto":
            fmt = {"type": "sequence", "elements": [{"type": "any_text", "excludes": [TRIGGER]}, calls]}
        else:
            fmt = calls
        return GrammarSpec("tool_calls", canonical_json({"type": "structural_tag", "format": fmt}))


def _tool_choice_mode(tool_choice: Any, names: set[str]) -> tuple[str, str | None]:
    if tool_choice is None:
        return "auto", None
    if isinstance(tool_choice, str):
        if tool_choice in ("auto", "none", "required"):
            return tool_choice, None
        name = tool_choice  # TGI accepts a bare function name
    elif isinstance(tool_choice, dict):
        # huggingface_hub sends {"function": {"name"}} without "type"
        if tool_choice.get("type", "function") != "function":
            raise ToolError(
                "`tool_choice` object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                param="tool_choice",
            )
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise ToolError("`tool_choice.function.name` is required", param="tool_choice.function.name")
    else:
        raise ToolError(
            "`tool_choice` must be 'auto', 'none', 'required', a function name or a function object",
            param="tool_choice",
        )
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise ToolError(
            f"`tool_choice` names function {name!r}, which is not in `tools` (available: {known})",
            param="tool_choice",
        )
    return "function", name


def _normalise_tool(index: int, tool: Any) -> dict[str, Any]:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ToolError(f"`{where}` must be {{\"type\": \"function\", \"function\": {{...}}}}", param=where)
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise ToolError(f"`{where}.function` is required", param=f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolError(
            f"`{where}.function.name` must be 1-64 characters of a-z, A-Z, 0-9, '_', '-' or '.'",
            param=f"{where}.function.name",
        )
    params = fn.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise ToolError(f"`{where}.function.parameters` must be a JSON Schema object", param=f"{where}.function.parameters")
        try:
            check_schema(params, param=f"{where}.function.parameters")
        except InvalidGrammarError as exc:
            raise ToolError(exc.message, param=exc.param) from exc
    out: dict[str, Any] = {"name": name}
    if fn.get("description") is not None:
        out["description"] = fn["description"]
    out["parameters"] = params if params is not None else NO_PARAMETERS
    if fn.get("strict") is not None:
        out["strict"] = fn["strict"]
    return {"type": "function", "function": out}


def plan_tools(
    tools: Any,
    tool_choice: Any = None,
    *,
    parallel_tool_calls: bool | None = None,
    has_grammar: bool = False,
) -> ToolPlan | None:
    """Validate the request's tool fields; ``None`` means generate freely (no tools, or ``tool_choice`` none)."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ToolError("`tool_choice` needs `tools`", param="tool_choice")
        return None
    if not isinstance(tools, list):
        raise ToolError("`tools` must be a list of function tools", param="tools")
    normalised = [_normalise_tool(i, t) for i, t in enumerate(tools)]
    names = [t["function"]["name"] for t in normalised]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ToolError(f"`tools` has duplicate function name(s): {', '.join(dupes)}", param="tools")
    mode, forced = _tool_choice_mode(tool_choice, set(names))
    if has_grammar:
        raise ToolError("grammar / response_format and tools are mutually exclusive", param="tools")
    if mode == "none":
        return None
    return ToolPlan(
        tools=tuple(normalised),
        mode=mode,  # type: ignore[arg-type]
        forced=forced,
        parallel=True if parallel_tool_calls is None else bool(parallel_tool_calls),
    )


# ---------------------------------------------------------------------------------------------------------
# Chat template input


def template_variables(template: str | None) -> set[str]:
    """Names a chat template reads from its context (``tools``, ``messages``, ...)."""
    if not template:
        return set()
    try:
        return set(jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)))
    except jinja2.TemplateSyntaxError:
        return set()


def decoded_arguments(arguments: Any, *, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """A call's ``arguments`` string as JSON when it is JSON the runtime accepts (:mod:`runtime.jsonbody`: no lone
    surrogates, no nesting past MAX_JSON_DEPTH), else the string as it is: clients may replay any string here."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return decode(arguments, max_depth=max_json_depth)
    except JSONInputError:
        return arguments


def format_tool_call(name: str, arguments: Any, *, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> str:
    """One call in the model's wire format (used to render earlier assistant turns for plain templates)."""
    arguments = decoded_arguments(arguments, max_json_depth=max_json_depth)
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'{CALL_PREFIX}{name}{ARGUMENTS_PREFIX}{args}{CALL_SUFFIX}'


def tool_prompt(plan: ToolPlan, prompt: str | None = None) -> str:
    lines = [prompt or DEFAULT_TOOL_PROMPT]
    lines += [json.dumps(t, ensure_ascii=False) for t in plan.tools]
    if plan.mode == "required":
        lines.append("You must call at least one function.")
    elif plan.mode == "function":
        lines.append(f"You must call the function {plan.forced}.")
    return "\n".join(lines)


def _text_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def prepare_chat(
    messages: list[dict[str, Any]],
    *,
    plan: ToolPlan | None,
    template: str | None,
    prompt: str | None = None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages and the ``tools`` variable to render the chat template with.

    A template that reads ``tools`` gets them as is (it knows how to present them); otherwise the tool
    description and call format go into the system message (TGI's ``tool_prompt`` approach). Assistant turns
    with ``tool_calls`` are passed through (arguments decoded to objects, as HF templates expect) when the
    template reads ``tool_calls``, else rendered as ``<tool_call>`` text in the content; ``tool`` turns keep
    their role when the template knows it, else become user turns wrapped in ``<tool_response>``.
    """
    variables = template_variables(template)
    source = template or ""
    knows_tool_calls = "tool_calls" in source
    knows_tool_role = "'tool'" in source or '"tool"' in source
    out: list[dict[str, Any]] = []
    for m_index, message in enumerate(messages):
        msg = dict(message)
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            calls = msg["tool_calls"]
            _check_history_calls(calls, where=f"messages[{m_index}].tool_calls")
            if knows_tool_calls:
                msg["tool_calls"] = [_decoded_call(c, max_json_depth=max_json_depth) for c in calls]
                msg["content"] = _text_content(msg.get("content"))
            else:
                text = _text_content(msg.get("content"))
                blocks = [format_tool_call(c["function"]["name"], c["function"].get("arguments", {}),
                                           max_json_depth=max_json_depth) for c in calls]
                msg["content"] = "\n".join(([text] if text else []) + blocks)
                msg.pop("tool_calls")
        elif role == "tool" and not knows_tool_role:
            msg = {"role": "user", "content": f"<tool_response>\n{_text_content(msg.get('content'))}\n</tool_response>"}
        elif "content" in msg and not isinstance(msg["content"], str):
            msg["content"] = _text_content(msg["content"])
        out.append(msg)
    if plan is None:
        return out, None
    tools = [dict(t) for t in plan.tools]
    if "tools" in variables:
        return out, tools
    text = tool_prompt(plan, prompt)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{text}"}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out, None


def _check_history_calls(calls: Any, *, where: str) -> None:
    if not isinstance(calls, list):
        raise ToolError(f"`{where}` must be a list of tool calls", param=where)
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ToolError(
                f"`{where}[{i}]` must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}",
                param=f"{where}[{i}]",
            )
        if not isinstance(fn.get("arguments", "{}"), str | dict):
            raise ToolError(f"`{where}[{i}].function.arguments` must be a JSON string", param=f"{where}[{i}].function.arguments")


def _decoded_call(call: dict[str, Any], *, max_json_depth: int) -> dict[str, Any]:
    call = json.loads(json.dumps(call))
    fn = call.get("function", {})
    if "arguments" in fn:
        fn["arguments"] = decoded_arguments(fn["arguments"], max_json_depth=max_json_depth)
    return call
