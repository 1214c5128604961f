"""Server-sent events framing, shared by the OpenAI and TGI streams."""

from __future__ import annotations

from typing import Any

import orjson

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any) -> bytes:
    """One SSE event. orjson rather than json.dumps: a chunk is serialised once per token per stream, on the event
    loop that shares the CPU with the model (same compact UTF-8 output; non-finite floats become null, valid JSON)."""
    return b"data: " + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"


HEARTBEAT = b": keep-alive\n\n"
