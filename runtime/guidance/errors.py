"""Typed errors for bad guidance input, raised before any generation starts.

Every error names the request parameter it is about (``param``, in the OpenAI error envelope's sense) and says
what is wrong in words a client can act on. The protocol layers map the whole family to a 4xx in one place
(400 on the OpenAI routes, 422 on the TGI routes); nothing here knows about HTTP.

    GuidanceError (ValueError)
    ├── InvalidGrammarError   malformed ``grammar`` / ``response_format``, invalid JSON Schema or regex
    └── ToolError             bad ``tools`` / ``tool_choice``, unknown function, grammar together with tools
"""

from __future__ import annotations


class GuidanceError(ValueError):
    """Base class: a guidance parameter of the request cannot be honoured."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidGrammarError(GuidanceError):
    """The grammar, JSON Schema or regex is malformed or uses something the grammar engine cannot enforce."""


class ToolError(GuidanceError):
    """``tools`` / ``tool_choice`` are inconsistent (TGI's ``tool_error``: ``per_request.api_error`` maps it)."""
