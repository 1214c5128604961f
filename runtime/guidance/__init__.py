"""Guided generation: JSON Schema / regex grammars, ``response_format`` and tool calling for the runtime.

The engine only knows the :class:`runtime.engine.constraint_protocol.TokenConstraint` protocol; this package
supplies its implementation on top of xgrammar (why xgrammar: see :mod:`runtime.guidance.compiler`) and everything
the protocol layers need around it:

* :mod:`~runtime.guidance.specs` — TGI ``grammar`` and OpenAI ``response_format`` → :class:`GrammarSpec`;
* :mod:`~runtime.guidance.compiler` — :class:`GrammarCompiler`: spec → compiled grammar, LRU-cached by
  canonical key, errors typed;
* :mod:`~runtime.guidance.xgrammar_constraint` — the per-sequence :class:`GrammarConstraint` and batch mask
  helpers;
* :mod:`~runtime.guidance.tools` — ``tools`` / ``tool_choice`` validation, tool-call grammar, chat template input;
* :mod:`~runtime.guidance.toolcalls` — generated text → OpenAI ``tool_calls`` (whole or streamed deltas);
* :mod:`~runtime.guidance.errors` — :class:`GuidanceError` and subclasses;
* :mod:`~runtime.guidance.per_request` — what the OpenAI and TGI routes call per request: guidance fields to a
  constraint factory, guidance errors to the runtime's 4xx, the answer shaped for tool calls.
"""

from runtime.guidance.compiler import GrammarCompiler
from runtime.guidance.errors import GuidanceError, InvalidGrammarError, ToolError
from runtime.guidance.specs import GrammarSpec, from_response_format, from_tgi_grammar
from runtime.guidance.toolcalls import ParsedOutput, ToolCall, ToolCallStream, parse_tool_calls
from runtime.guidance.tools import ToolPlan, plan_tools, prepare_chat
from runtime.guidance.xgrammar_constraint import (
    GrammarConstraint,
    GrammarConstraintFactory,
    apply_bitmask,
    fill_bitmasks,
)

__all__ = [
    "GrammarCompiler",
    "GrammarConstraint",
    "GrammarConstraintFactory",
    "GrammarSpec",
    "GuidanceError",
    "InvalidGrammarError",
    "ParsedOutput",
    "ToolCall",
    "ToolCallStream",
    "ToolError",
    "ToolPlan",
    "apply_bitmask",
    "fill_bitmasks",
    "from_response_format",
    "from_tgi_grammar",
    "parse_tool_calls",
    "plan_tools",
    "prepare_chat",
]
