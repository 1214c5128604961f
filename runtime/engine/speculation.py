"""N-gram (prompt lookup) speculation: draft tokens copied from earlier in the sequence, verified in one step.

TGI's ``SPECULATE`` without Medusa heads does the same. The drafts cost no model: the most recent earlier
occurrence of the sequence's last 3 (then 2, then 1) tokens proposes the tokens that followed it. The engine
feeds ``[last token, draft...]`` as extra rows of the decode step; row ``j`` predicts the token after draft
``j``, so every draft the model agrees with is a token gained, and the first disagreement still yields the
model's own token. The lean forward is row- and length-invariant to the bit, so a verified greedy token is exactly
the token plain decoding would produce: output does not change, only how many steps it takes.

Rows a decode step computes anyway (the batch is padded to a multiple of
:data:`~runtime.engine.model.ROW_MULTIPLE` rows) take drafts first: a lone stream gets up to 3 per step for free.
Beyond those, a draft costs a row of compute, so a sequence gets one paid row per step only while its own recent
drafts were mostly accepted. Repetitive output (code, quoting the prompt, loops of a small model) gains most; text
the n-grams cannot predict soon stops paying and costs one probe row every few steps.
"""

from __future__ import annotations

MAX_NGRAM = 3

PAID_DRAFT_MIN_ACCEPTANCE = 0.6
"""A row holding one draft pays off when the draft is accepted more often than the row adds to the step's time.
On CPU a wide step is bound by its FMAs, yet doubling its rows costs well under twice the time (the weights are
streamed once for all rows), so one paid row per sequence breaks even below 50% acceptance; 0.6 leaves a margin.
A memory-bound GPU step pays far less per row. ``bench/runtime_throughput.py`` reports the drafts proposed and
accepted at 32 clients."""

PAID_DRAFT_PROBE_EVERY = 8
"""Below the threshold a sequence still drafts (paid) every this many steps, so a sequence that becomes
repetitive later is noticed."""

SPEC_DECAY = 0.9
"""Per-step decay of a sequence's draft/accept counts: the rate reflects roughly the last ten steps."""


class NgramProposer:
    """Index of every n-gram (n <= MAX_NGRAM) of one sequence to the position right after its latest occurrence."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        # Before adding ``token``, index the n-grams that end at the current last token: their continuation is
        # ``token``, at position len(tokens).
        toks = self.tokens
        end = len(toks)
        for n in range(1, min(MAX_NGRAM, end) + 1):
            self._next[tuple(toks[end - n:end])] = end
        toks.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest matching suffix."""
        if k <= 0:
            return []
        toks = self.tokens
        for n in range(min(MAX_NGRAM, len(toks)), 0, -1):
            start = self._next.get(tuple(toks[-n:]))
            if start is not None:
                return toks[start:start + k]
        return []
