"""Strict JSON for everything a client sends: request bodies, and JSON carried inside them as strings (a TGI
grammar's schema, an earlier tool call's arguments).

Python's ``json`` module accepts what RFC 8259 does not and what the rest of the runtime cannot hold: ``NaN`` and
``Infinity`` literals, numbers that overflow to ``inf`` (``1e309``), lone UTF-16 surrogates (``"\\ud800"``, which the
tokenizer and every UTF-8 encoder refuse), and nesting deep enough to exhaust the interpreter's stack (a 50k-deep
array raises ``RecursionError``). Each of those became a 500 somewhere downstream. Here they are refused at the
door, by orjson (a strict RFC 8259 parser, already a dependency for SSE) plus a depth limit of our own
(``MAX_JSON_DEPTH``), because orjson's fixed 1024 levels are more than the code after it survives: ``json.dumps``,
jsonschema and the chat template all recurse per level.

Errors are :class:`JSONInputError` (a ``ValueError``) carrying the parameter they are about where one applies; the
protocol layers map them to their 4xx.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

DEFAULT_MAX_JSON_DEPTH = 64


class JSONInputError(ValueError):
    """The text is not JSON the runtime accepts; ``param`` is the dotted path of the offending value, if known."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def decode(raw: bytes | str, *, max_depth: int, what: str = "Request body", param: str | None = None) -> Any:
    """Parse ``raw`` strictly (module docstring); ``what`` and ``param`` name it in errors.

    Raises :class:`JSONInputError`.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _explain(raw, exc, what=what, param=param, max_depth=max_depth) from exc
    too_deep = _path_deeper_than(value, max_depth)
    if too_deep is not None:
        where = join_path(param, too_deep[:1])
        raise JSONInputError(
            f"{what} is nested more than {max_depth} levels deep (MAX_JSON_DEPTH)"
            + (f" under `{where}`" if where else ""),
            param=where,
        )
    return value


def join_path(prefix: str | None, parts: list[str | int] | tuple[str | int, ...]) -> str | None:
    """``prefix`` and ``parts`` as the dotted parameter path the error envelopes use (``messages.0.content``)."""
    items = ([prefix] if prefix else []) + [str(p) for p in parts]
    return ".".join(items) or None


def _explain(raw: bytes | str, exc: orjson.JSONDecodeError, *, what: str, param: str | None,
             max_depth: int) -> JSONInputError:
    reason = exc.msg
    if "depth" in reason:
        return JSONInputError(f"{what} is nested more than {max_depth} levels deep (MAX_JSON_DEPTH)", param=param)
    if "surrogate" in reason and "UTF-8" not in reason:
        # orjson says where, not which value: the standard parser keeps lone surrogates, so it can find the path.
        path = _surrogate_path(raw)
        where = join_path(param, path) if path is not None else param
        return JSONInputError(
            f"{what} contains a lone UTF-16 surrogate escape (such as \\ud800)"
            + (f" in `{where}`" if where else "")
            + ": it is not a Unicode character; send valid UTF-8 text",
            param=where,
        )
    if "UTF-8" in reason:
        return JSONInputError(f"{what} is not valid UTF-8", param=param)
    return JSONInputError(f"{what} is not valid JSON: {reason} at line {exc.lineno} column {exc.colno}", param=param)


def _surrogate_path(raw: bytes | str) -> list[str | int] | None:
    """Where the first lone surrogate sits: ``[]`` for the root, a key's parent for a key; ``None`` when unknown."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if not _is_unicode(node):
                return path
        elif isinstance(node, dict):
            children = []
            for key, child in node.items():
                if not _is_unicode(key):
                    return path
                children.append((child, [*path, key]))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(reversed([(child, [*path, i]) for i, child in enumerate(node)]))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path_deeper_than(value: Any, limit: int) -> list[str | int] | None:
    """The path to the first container nested deeper than ``limit`` (the root is level 1); ``None`` if none is.

    Iterative and touching containers only, so a flat array of a million numbers costs one pass over it.
    """
    if not isinstance(value, dict | list):
        return None
    stack: list[tuple[Any, int, list[str | int]]] = [(value, 1, [])]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, [*path, key]))
    return None
