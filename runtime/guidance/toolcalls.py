"""Turn generated ``<tool_call>`` blocks into OpenAI ``tool_calls``, whole or as streaming deltas.

Both paths share one incremental scanner, so a streamed answer and the same answer non-streamed agree exactly:
``function.arguments`` is the arguments object *as the model wrote it* — a JSON **string**, never an object
(TGI issues #2136 / #2461) — and every call gets a fresh ``call_<24 hex>`` id.

Streaming deltas follow OpenAI: the first delta of a call carries ``index``, ``id``, ``type: "function"`` and
``function.name`` (with empty ``arguments``); later deltas carry only ``index`` and ``function.arguments``
fragments. Text outside tool calls is content. Text that might be the start of the trigger is held back until
it is clear, so ``<tool_call>`` never leaks into content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.guidance.tools import CALL_END_TAG, TRIGGER

_HEADER = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    index: int
    id: str
    name: str
    arguments: str = ""
    complete: bool = False

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ParsedOutput:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)

    def openai_tool_calls(self) -> list[dict[str, Any]]:
        return [c.to_openai() for c in self.tool_calls]


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ToolCallStream:
    """Feed generated text deltas; get content text and OpenAI tool-call deltas back.

    States: ``text`` (content, watching for the trigger), ``header`` (reading ``{"name": ..., "arguments": ``),
    ``args`` (the arguments object, tracked by brace depth outside strings), ``tail`` (``}`` and
    ``</tool_call>`` after the arguments).
    """

    def __init__(self) -> None:
        self._state = "text"
        self._buf = ""
        self.calls: list[ToolCall] = []
        self.content = ""
        self._depth = 0
        self._in_string = False
        self._escape = False

    # -- public API --------------------------------------------------------------------------------------

    def feed(self, delta: str) -> tuple[str, list[dict[str, Any]]]:
        """Consume ``delta``; return (content text to emit, tool-call deltas to emit)."""
        self._buf += delta
        content: list[str] = []
        deltas: list[dict[str, Any]] = []
        progressed = True
        while progressed and self._buf:
            progressed = getattr(self, f"_step_{self._state}")(content, deltas)
        text = "".join(content)
        self.content += text
        return text, deltas

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """End of generation: flush held-back text (before any call, an unfinished trigger is just content).

        After a call the tool grammar allows nothing but more calls, so text held back then (``<tool``, or a
        trigger whose header never completed) is the start of a next call that ``max_tokens`` cut off: markup,
        not content."""
        text = ""
        if self.calls and self._state in ("text", "header"):
            self._buf, self._state = "", "text"
        if self._state == "text" and self._buf:
            text, self._buf = self._buf, ""
        elif self._state == "header" and self._buf:
            # A trigger whose header never completed: it was text after all.
            text, self._buf = TRIGGER + self._buf, ""
            self._state = "text"
        self.content += text
        return text, []

    def result(self) -> ParsedOutput:
        return ParsedOutput(content=self.content, tool_calls=list(self.calls))

    # -- states ------------------------------------------------------------------------------------------

    def _step_text(self, content: list[str], deltas: list[dict[str, Any]]) -> bool:
        if self.calls:
            # Separator whitespace between (or after) calls is not content.
            stripped = self._buf.lstrip()
            if not stripped:
                return False
            self._buf = stripped
        pos = self._buf.find(TRIGGER)
        if pos >= 0:
            content.append(self._buf[:pos])
            self._buf = self._buf[pos + len(TRIGGER):]
            self._state = "header"
            return True
        hold = _partial_suffix(self._buf, TRIGGER)
        emit = self._buf[: len(self._buf) - hold]
        if emit:
            content.append(emit)
            self._buf = self._buf[len(emit):]
        return False

    def _step_header(self, content: list[str], deltas: list[dict[str, Any]]) -> bool:
        match = _HEADER.match(self._buf)
        if match is None:
            return False
        name = json.loads(f'"{match.group(1)}"')
        call = ToolCall(index=len(self.calls), id=new_call_id(), name=name)
        self.calls.append(call)
        deltas.append(
            {"index": call.index, "id": call.id, "type": "function", "function": {"name": name, "arguments": ""}}
        )
        self._buf = self._buf[match.end():]
        self._state = "args"
        self._depth, self._in_string, self._escape = 0, False, False
        return True

    def _step_args(self, content: list[str], deltas: list[dict[str, Any]]) -> bool:
        call = self.calls[-1]
        end = None
        for i, ch in enumerate(self._buf):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = i + 1
                    break
        fragment = self._buf if end is None else self._buf[:end]
        if call.arguments == "":
            fragment = fragment.lstrip()
        if fragment:
            call.arguments += fragment
            deltas.append({"index": call.index, "function": {"arguments": fragment}})
        if end is None:
            self._buf = ""
            return False
        call.complete = True
        self._buf = self._buf[end:]
        self._state = "tail"
        return True

    def _step_tail(self, content: list[str], deltas: list[dict[str, Any]]) -> bool:
        pos = self._buf.find(CALL_END_TAG)
        if pos < 0:
            return False
        self._buf = self._buf[pos + len(CALL_END_TAG):]
        self._state = "text"
        return True


def parse_tool_calls(text: str) -> ParsedOutput:
    """Parse a whole generated text (the non-streaming path)."""
    stream = ToolCallStream()
    stream.feed(text)
    stream.finish()
    return stream.result()
