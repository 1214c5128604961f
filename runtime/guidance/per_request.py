"""Guidance per request: one call turns a request's guidance fields into engine terms.

The OpenAI and TGI routes stay thin: they call :func:`chat_guidance` / :func:`grammar_factory` while
validating a request (before any generation), render the chat template with the messages and ``tools`` it
returns, set ``SamplingParams.constraint_factory``, and let :class:`ChatGuidance` shape the answer (tool calls,
``finish_reason: "tool_calls"``) and the streamed deltas. Guidance errors become the runtime's typed API errors
here, at the boundary: 400 on OpenAI routes, 422 on TGI routes (``error_type`` ``tool_error`` for tool problems).

One :class:`GrammarCompiler` per loaded model (its tokenizer and logits width), built on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from runtime.engine.params import FinishReason
from runtime.errors import InvalidRequest, RuntimeAPIError, ValidationError
from runtime.guidance.compiler import GrammarCompiler
from runtime.guidance.xgrammar_constraint import GrammarConstraintFactory
from runtime.guidance.errors import GuidanceError, ToolError
from runtime.guidance.specs import GrammarSpec, from_response_format, from_tgi_grammar
from runtime.guidance.toolcalls import ToolCallStream, parse_tool_calls
from runtime.guidance.tools import ToolPlan, plan_tools, prepare_chat
from runtime.jsonbody import DEFAULT_MAX_JSON_DEPTH


class InvalidGuidance(InvalidRequest):
    """OpenAI routes: a bad grammar / tools request (400, ``invalid_request_error``)."""


class GuidanceValidationError(ValidationError):
    """TGI routes: a bad grammar (422, ``validation``)."""


class ToolCallError(ValidationError):
    """TGI routes: a bad tools request (422, TGI's ``tool_error``)."""

    tgi_type = "tool_error"


def api_error(exc: GuidanceError, *, tgi: bool = False) -> RuntimeAPIError:
    if not tgi:
        return InvalidGuidance(exc.message, param=exc.param)
    cls = ToolCallError if isinstance(exc, ToolError) else GuidanceValidationError
    return cls(exc.message, param=exc.param)


_compilers: dict[int, tuple[Any, GrammarCompiler]] = {}
_compilers_lock = threading.Lock()


def compiler_for(loaded: Any) -> GrammarCompiler:
    """The compiler for a loaded model (keyed by its tokenizer object; one model per process in practice)."""
    key = id(loaded.tokenizer)
    with _compilers_lock:
        entry = _compilers.get(key)
        if entry is None or entry[0] is not loaded.tokenizer:
            engine = loaded.engine
            compiler = GrammarCompiler(
                loaded.tokenizer,
                vocab_size=getattr(engine, "vocab_size", None),
                stop_token_ids=sorted(getattr(engine, "eos_ids", ()) or ()) or None,
            )
            entry = _compilers[key] = (loaded.tokenizer, compiler)
        return entry[1]


def _factory(loaded: Any, spec: GrammarSpec | None, *, param: str,
             tgi: bool) -> GrammarConstraintFactory | None:
    if spec is None:
        return None
    try:
        return compiler_for(loaded).factory(spec, param=param)
    except GuidanceError as exc:
        raise api_error(exc, tgi=tgi) from exc


def grammar_factory(loaded: Any, grammar: Any, *,
                    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> GrammarConstraintFactory | None:
    """TGI ``parameters.grammar`` → constraint factory (``None`` without a grammar). Raises 422s."""
    try:
        spec = from_tgi_grammar(grammar, param="parameters.grammar", max_json_depth=max_json_depth)
    except GuidanceError as exc:
        raise api_error(exc, tgi=True) from exc
    return _factory(loaded, spec, param="parameters.grammar.value", tgi=True)


async def precompile_grammar(loaded: Any, grammar: Any, *, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
    """Compile a TGI grammar in a worker thread (xgrammar releases the GIL), so the synchronous
    :func:`grammar_factory` call in request preparation is a cache hit and the event loop never waits on a cold
    compile. Errors surface there, as 422s."""
    if grammar is None:
        return
    with contextlib.suppress(RuntimeAPIError):
        await asyncio.to_thread(grammar_factory, loaded, grammar, max_json_depth=max_json_depth)


def response_format_factory(loaded: Any, response_format: Any, *,
                            max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> GrammarConstraintFactory | None:
    """OpenAI ``response_format`` on /v1/completions → constraint factory. Raises 400s."""
    try:
        spec = from_response_format(response_format, max_json_depth=max_json_depth)
    except GuidanceError as exc:
        raise api_error(exc) from exc
    return _factory(loaded, spec, param="response_format", tgi=False)


@dataclass
class ChatGuidance:
    """A chat request's guidance: template input, the constraint, and how to shape the answer."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # the chat template's ``tools`` variable
    plan: ToolPlan | None
    factory: GrammarConstraintFactory | None

    def message(self, text: str, finish: FinishReason | None) -> tuple[dict[str, Any], bool]:
        """The assistant message for a finished choice, and whether it carries tool calls."""
        if self.plan is None:
            return {"role": "assistant", "content": text}, False
        parsed = parse_tool_calls(text)
        if not parsed.tool_calls:
            return {"role": "assistant", "content": parsed.content}, False
        return {"role": "assistant", "content": parsed.content or None, "tool_calls": parsed.openai_tool_calls()}, True

    def streamer(self) -> ToolCallStream | None:
        return ToolCallStream() if self.plan is not None else None


def openai_finish(finish: FinishReason | None, *, tool_calls: bool) -> str | None:
    """OpenAI's finish_reason: ``tool_calls`` when the choice ended after complete calls, else stop/length."""
    if finish is None:
        return None
    if finish is FinishReason.LENGTH:
        return "length"
    return "tool_calls" if tool_calls else "stop"


def chat_guidance(
    loaded: Any,
    messages: list[dict[str, Any]],
    *,
    template: str | None,
    response_format: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
    tool_prompt: str | None = None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> ChatGuidance:
    """Validate and compile a chat request's guidance fields (OpenAI route, so errors are 400s)."""
    try:
        spec = from_response_format(response_format, max_json_depth=max_json_depth)
        plan = plan_tools(tools, tool_choice, parallel_tool_calls=parallel_tool_calls, has_grammar=spec is not None)
        out_messages, template_tools = prepare_chat(messages, plan=plan, template=template, prompt=tool_prompt,
                                                    max_json_depth=max_json_depth)
        tool_spec = plan.grammar_spec() if plan is not None else None
    except GuidanceError as exc:
        raise api_error(exc) from exc
    if plan is not None:
        factory = _factory(loaded, tool_spec, param="tools", tgi=False)
    else:
        factory = _factory(loaded, spec, param="response_format", tgi=False)
    return ChatGuidance(messages=out_messages, tools=template_tools, plan=plan, factory=factory)
