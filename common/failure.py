"""One line out of a failed replica's output: what status messages and events say about a failure.

A replica that dies at start-up leaves a log tail (locally) or a termination message (Kubernetes,
`FallbackToLogsOnError`) that is often a Python traceback. Shown as a status message it is twelve lines that bury
the cause, repeated by `create --wait` and by every event. Status and events carry one line — the cause — and the
whole output stays where it belongs, in `endpointctl logs`. The runtime helps by logging the cause as its own line
(`model load failed: ...`) just before it exits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Longest cause kept in a message; the rest is in the logs.
MAX_CAUSE = 300

# The runtime's own summaries (runtime/app.py, runtime/launch.py); when present they are the best line.
_SUMMARY = re.compile(r"((?:model load failed|invalid configuration): .+)$")
# The last line of a Python traceback: `ValueError: ...`, `huggingface_hub.errors.X: ...`, `KeyError`.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure))(?::\s*(.*))?$")
# Lines that say a process ended, not why.
_NOISE = re.compile(r"(exiting with code \d+|^\[supervisor [^]]*\]|^Traceback \(most recent call last\):$)")


def failure_cause(lines: Iterable[str]) -> str | None:
    """The one line that best says why a process failed, from its last output lines (oldest first)."""
    lines = [line.strip() for line in lines if line and line.strip()]
    for line in reversed(lines):
        found = _SUMMARY.search(line)
        if found:
            return _clip(found.group(1))
    for line in reversed(lines):
        if _EXCEPTION.match(line):
            return _clip(line)
    for line in reversed(lines):
        if not _NOISE.search(line) and not line.startswith(("File ", "^", "~")):
            return _clip(line)
    return None


def one_line(message: str | None) -> str | None:
    """`message` as one line: its first line, followed by the failure cause read from the lines after it."""
    if message is None:
        return None
    text = message.strip()
    if "\n" not in text:
        return _clip(text, MAX_CAUSE * 2)
    first, *rest = text.splitlines()
    first = first.strip()
    for tail in ("Traceback (most recent call last):", "last log lines:", "last termination message:"):
        if first.endswith(tail):
            first = first[: -len(tail)].rstrip(" ;:,")
    cause = failure_cause(rest)
    if not cause:
        return _clip(first, MAX_CAUSE * 2)
    return _clip(f"{first}: {cause}" if first else cause, MAX_CAUSE * 2)


def _clip(text: str, limit: int = MAX_CAUSE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
