"""Find the rules of a grammar that can be entered but never finished.

A JSON Schema can describe values that do not exist: ``{"$ref": "#"}``, two ``$defs`` that only point at each
other, a required property whose schema contains itself. xgrammar compiles such a schema without complaint, into
a rule that derives no finite string. Generation then walks into it — at once, or after ``{"a": `` — and finds no
allowed token: every logit masked, NaN probabilities, and a failed engine step that also fails every other request
in the batch. Refusing the grammar up front turns that into a 4xx for the one request that sent it.

The check is the textbook one for context-free grammars: a rule is *productive* when one of its alternatives is
made only of terminals and productive rules (least fixed point); any rule reachable from the root that is not
productive is a dead end. It reads the grammar's own structure (``Grammar.serialize_json``: each expression is
``[kind, length, payload...]``), so it sees exactly what the matcher will run. Kinds this code does not know are
assumed productive, so a newer xgrammar can only make the check miss a dead end, never refuse a good grammar.
"""

from __future__ import annotations

import json
from typing import Any

# xgrammar's GrammarExprType, in the order of its serialisation.
_BYTES, _CLASS, _CLASS_STAR, _EMPTY, _RULE_REF, _SEQUENCE, _CHOICES, _TAG_DISPATCH, _REPEAT = range(9)
_MAX_CODEPOINT = 0x10FFFF


def dead_rules(grammar: Any) -> list[str]:
    """Names of the rules reachable from the root that derive no finite string (empty when the grammar is sound)."""
    data = json.loads(grammar.serialize_json())
    flat: list[int] = data["grammar_expr_data"]
    starts: list[int] = data["grammar_expr_indptr"]
    ends = [*starts[1:], len(flat)]
    exprs = [(flat[s], flat[s + 2 : e]) for s, e in zip(starts, ends, strict=True)]
    rules = data["rules"]
    bodies = [rule[1] for rule in rules]
    productive = _productive(exprs, bodies)
    reachable = _reachable(exprs, bodies, data["root_rule_id"])
    return [rules[r][0] for r in sorted(reachable) if not productive[r]]


def _productive(exprs: list[tuple[int, list[int]]], bodies: list[int]) -> list[bool]:
    """Least fixed point by propagation from the terminals, linear in the grammar's size: an expression becomes
    productive when its last missing child does (sequence), its first child does (choices), or its rule does."""
    rule_ok = [False] * len(bodies)
    expr_ok = [False] * len(exprs)
    missing = [0] * len(exprs)  # sequences: children not yet known productive
    parents: list[list[int]] = [[] for _ in exprs]
    users: list[list[int]] = [[] for _ in bodies]  # expressions that refer to a rule
    body_of: dict[int, list[int]] = {}
    for r, body in enumerate(bodies):
        body_of.setdefault(body, []).append(r)
    todo: list[int] = []
    for i, (kind, payload) in enumerate(exprs):
        if kind in (_SEQUENCE, _CHOICES):
            for j in payload:
                parents[j].append(i)
            missing[i] = len(payload)
            if kind == _SEQUENCE and not payload:
                todo.append(i)
        elif kind == _RULE_REF or (kind == _REPEAT and payload[1] > 0):
            users[payload[0]].append(i)
        elif kind != _CLASS or _class_matches_something(payload):
            todo.append(i)  # terminals, a repeat that may be empty, tag dispatch and kinds unknown here
    while todo:
        i = todo.pop()
        if expr_ok[i]:
            continue
        expr_ok[i] = True
        for parent in parents[i]:
            if expr_ok[parent]:
                continue
            if exprs[parent][0] == _CHOICES:
                todo.append(parent)
            else:
                missing[parent] -= 1
                if missing[parent] == 0:
                    todo.append(parent)
        for r in body_of.get(i, ()):
            if not rule_ok[r]:
                rule_ok[r] = True
                todo.extend(users[r])
    return rule_ok


def _reachable(exprs: list[tuple[int, list[int]]], bodies: list[int], root: int) -> set[int]:
    seen_rules = {root}
    seen_exprs: set[int] = set()
    todo = [bodies[root]]
    while todo:
        i = todo.pop()
        if i in seen_exprs:
            continue
        seen_exprs.add(i)
        kind, payload = exprs[i]
        if kind in (_SEQUENCE, _CHOICES):
            todo.extend(payload)
        elif kind in (_RULE_REF, _REPEAT) and payload[0] not in seen_rules:
            seen_rules.add(payload[0])
            todo.append(bodies[payload[0]])
    return seen_rules


def _class_matches_something(payload: list[int]) -> bool:
    """``[negated, lo, hi, lo, hi, ...]``: false for ``[]`` and for a negated class that covers every code point."""
    negated, bounds = payload[0], payload[1:]
    ranges = sorted(zip(bounds[::2], bounds[1::2], strict=True))
    if not negated:
        return any(lo <= hi for lo, hi in ranges)
    covered = 0  # every code point below this is in some range
    for lo, hi in ranges:
        if lo > covered:
            return True
        covered = max(covered, hi + 1)
    return covered <= _MAX_CODEPOINT
