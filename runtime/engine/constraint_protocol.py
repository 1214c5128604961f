"""The protocol a grammar engine implements to constrain a sequence's tokens; the engine knows nothing else about
grammars (``runtime.guidance.xgrammar_constraint`` is the implementation we ship).

The engine knows nothing about grammars. A protocol layer that wants constrained output sets
``SamplingParams.constraint_factory`` on the validated request; the scheduler calls the factory once per
sequence (so ``n=2`` gets two independent matchers) when the sequence joins the batch, and then, on every step:

1. ``fill_bitmask(bitmask, index)`` for each constrained row ``index`` of the batch. ``bitmask`` is the whole
   batch's int32 tensor of shape ``(batch, (vocab_size + 31) // 32)`` on CPU, xgrammar's packed layout (bit
   ``j % 32`` of word ``j // 32`` set = token ``j`` allowed), pre-filled with ``-1`` (all allowed) so an
   implementation writes only its own row. This is exactly ``xgrammar.GrammarMatcher.fill_next_token_bitmask``'s
   signature, so an xgrammar matcher can be wrapped without copying. Unconstrained rows are never masked, so
   constrained and free requests share one forward pass.
2. the engine samples a token from the masked logits and calls ``accept(token_id)``; ``False`` means the
   constraint refused a token it had allowed, which ends the sequence (``finish_reason`` stop).
3. after accepting, ``is_terminated()`` true ends the sequence with ``finish_reason`` stop (the EOS token the
   grammar may have accepted is not part of the output text).

``rollback(num_tokens)`` undoes accepted tokens. The engine does not call it: n-gram speculation
(:mod:`runtime.engine.speculation`) drafts only for unconstrained greedy sequences, so a constraint never accepts a
draft token it would have to take back. It is part of the protocol so that speculation over constrained rows can be
added without changing implementations.

``vocab_size`` for the bitmask is the model's logits width (``Engine.vocab_size``), which can be larger than the
tokenizer's vocabulary; the protocol layer can read ``Engine.tokenizer`` and ``Engine.vocab_size`` to build
its compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TokenConstraint(Protocol):
    """One sequence's grammar state. Methods are called from the engine thread only, never concurrently."""

    def fill_bitmask(self, bitmask: Any, index: int) -> None:
        """Write the allowed-token mask for the next token into row ``index`` of ``bitmask`` (int32, packed)."""

    def accept(self, token_id: int) -> bool:
        """Advance by the sampled token; return False if the token is not allowed."""

    def is_terminated(self) -> bool:
        """True once the grammar is complete; the sequence then ends with finish_reason stop."""

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted tokens."""


def fill_bitmasks(constraints: list[TokenConstraint], bitmask: Any, indices: list[int]) -> None:
    """Fill ``bitmask[indices[i]]`` for each ``constraints[i]``, one call per implementation where it can batch.

    An implementation class may define a static ``fill_bitmasks(constraints, bitmask, indices)`` that fills many
    rows at once (xgrammar's ``BatchGrammarMatcher``: one C++ call, no per-row Python); other constraints are
    filled row by row through the protocol method.
    """
    groups: dict[type, tuple[list[TokenConstraint], list[int]]] = {}
    for constraint, index in zip(constraints, indices, strict=True):
        batch_fill = getattr(type(constraint), "fill_bitmasks", None)
        if batch_fill is None:
            constraint.fill_bitmask(bitmask, index)
        else:
            group = groups.setdefault(type(constraint), ([], []))
            group[0].append(constraint)
            group[1].append(index)
    for cls, (group_constraints, group_indices) in groups.items():
        cls.fill_bitmasks(group_constraints, bitmask, group_indices)


ConstraintFactory = Callable[[], TokenConstraint]
"""Builds a fresh constraint for one sequence; called in the engine thread when the sequence is admitted."""


def bitmask_words(vocab_size: int) -> int:
    """Number of int32 words per bitmask row for ``vocab_size`` tokens (xgrammar's layout)."""
    return (vocab_size + 31) // 32
