"""One sequence's grammar state: the :class:`~runtime.engine.constraint_protocol.TokenConstraint` over xgrammar.

A :class:`GrammarConstraint` wraps an ``xgrammar.GrammarMatcher`` over a compiled grammar that is shared (read
only) by every sequence using the same schema. ``fill_bitmask`` writes straight into the engine's batch bitmask
row — the packed int32 layout the engine allocates is xgrammar's own, so nothing is copied.

:func:`fill_bitmasks` fills the rows of many constrained sequences in one call (xgrammar's
``BatchGrammarMatcher``, C++ threads, GIL released), which is what an engine that overlaps mask computation
with the forward pass wants; :func:`apply_bitmask` is xgrammar's CPU/CUDA kernel for masking logits in place,
restricted to the constrained rows so free requests in the same batch are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xgrammar as xgr


class GrammarConstraint:
    """``TokenConstraint`` over an xgrammar matcher. Not thread-safe: one engine thread drives it."""

    __slots__ = ("_matcher",)

    def __init__(self, compiled: xgr.CompiledGrammar) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)

    @property
    def matcher(self) -> xgr.GrammarMatcher:
        return self._matcher

    def fill_bitmask(self, bitmask: Any, index: int) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, index)

    def accept(self, token_id: int) -> bool:
        return self._matcher.accept_token(int(token_id))

    def is_terminated(self) -> bool:
        return self._matcher.is_terminated()

    def rollback(self, num_tokens: int) -> None:
        self._matcher.rollback(num_tokens)

    def accept_text(self, text: str) -> bool:
        """Advance by a literal string (tests, and jump-forward decoding if ever wanted)."""
        return self._matcher.accept_string(text)

    @staticmethod
    def fill_bitmasks(constraints: Sequence[GrammarConstraint], bitmask: Any, indices: Sequence[int]) -> None:
        """The batch hook ``constraint_protocol.fill_bitmasks`` looks for: all rows in one xgrammar call."""
        fill_bitmasks(constraints, bitmask, indices)


class GrammarConstraintFactory:
    """Builds a fresh :class:`GrammarConstraint` per sequence; set as ``SamplingParams.constraint_factory``."""

    __slots__ = ("compiled", "key")

    def __init__(self, compiled: xgr.CompiledGrammar, key: str) -> None:
        self.compiled = compiled
        self.key = key

    def __call__(self) -> GrammarConstraint:
        return GrammarConstraint(self.compiled)

    def __repr__(self) -> str:
        return f"GrammarConstraintFactory({self.key[:60]!r})"


_batch_matcher: xgr.BatchGrammarMatcher | None = None


def fill_bitmasks(constraints: Sequence[Any], bitmask: Any, indices: Sequence[int]) -> None:
    """Fill ``bitmask[indices[i]]`` for each ``constraints[i]`` in one call.

    xgrammar constraints go through ``BatchGrammarMatcher`` (one C++ call for all of them, GIL released, so it
    can run in a helper thread while the forward pass computes the logits); any other ``TokenConstraint``
    falls back to its own ``fill_bitmask``.
    """
    global _batch_matcher
    xgr_matchers: list[xgr.GrammarMatcher] = []
    xgr_rows: list[int] = []
    for constraint, row in zip(constraints, indices, strict=True):
        if isinstance(constraint, GrammarConstraint):
            xgr_matchers.append(constraint.matcher)
            xgr_rows.append(int(row))
        else:
            constraint.fill_bitmask(bitmask, int(row))
    if not xgr_matchers:
        return
    if len(xgr_matchers) == 1:
        xgr_matchers[0].fill_next_token_bitmask(bitmask, xgr_rows[0])
        return
    if _batch_matcher is None:
        _batch_matcher = xgr.BatchGrammarMatcher(max_threads=1)
    _batch_matcher.batch_fill_next_token_bitmask(xgr_matchers, bitmask, xgr_rows)


def apply_bitmask(logits: Any, bitmask: Any, indices: Sequence[int] | None = None) -> None:
    """Set disallowed logits to -inf in place, only in ``indices`` rows (all rows when ``None``)."""
    xgr.apply_token_bitmask_inplace(
        logits, bitmask.to(logits.device, non_blocking=True), indices=None if indices is None else list(indices)
    )
