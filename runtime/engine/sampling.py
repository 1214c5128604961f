"""Logits processing and sampling for a whole batch, each row with its own parameters.

The common case (every row greedy, nothing to adjust) is a single ``argmax`` over the batch. Otherwise rows are
adjusted only where needed: logit bias, EOS suppression (``ignore_eos``/``min_new_tokens``), repetition /
frequency / presence penalties, grammar bitmasks (only for constrained rows; see
:mod:`runtime.engine.constraint_protocol`), then greedy rows take the argmax and sampled rows draw from their own
seeded ``torch.Generator`` after temperature, top-k, top-p, min-p and typical-p filtering — so a row's result never
depends on its neighbours, and the same seed gives the same output alone or in a batch.

Logprobs are taken from the adjusted logits before temperature and filtering (what the model + penalties say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from runtime.engine.constraint_protocol import TokenConstraint, bitmask_words, fill_bitmasks
from runtime.engine.params import SamplingParams

try:  # xgrammar's packed-bitmask kernel: one native call for all constrained rows
    from xgrammar import apply_token_bitmask_inplace as _apply_bitmask_kernel
except ImportError:  # pragma: no cover - xgrammar is a dependency; keep the torch path as the fallback
    _apply_bitmask_kernel = None


class SamplingRow(Protocol):
    params: SamplingParams
    generator: torch.Generator | None
    prompt_ids: list[int]
    output_ids: list[int]
    constraint: TokenConstraint | None


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """Each row's argmax (the first maximal index, as torch.argmax). On CPU through NumPy, whose argmax over a
    batch of logits is several times faster than torch's, and this runs up to three times a step."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return logits.detach().numpy().argmax(-1).tolist()
    return logits.argmax(-1).tolist()


@dataclass
class GreedyChoices:
    """Per row of a step's logits: the argmax, and the argmax with EOS masked."""

    plain: list[int]
    no_eos: list[int]


@dataclass
class Sampled:
    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] | None


_BITS = None


def _unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    global _BITS
    if _BITS is None:
        _BITS = torch.arange(32, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> _BITS) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """Overflow (a repetition penalty of 1e-300 divides by it, a tiny temperature too) made some logits ±inf or NaN,
    which softmax turns into NaN for the whole row. +inf becomes the largest finite value (those tokens tie for the
    top), NaN and -inf stay or become -inf (a masked token stays masked)."""
    return logits.nan_to_num_(nan=float("-inf"), posinf=torch.finfo(logits.dtype).max, neginf=float("-inf"))


def _filter_row(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    logits = _finite(logits / p.temperature)
    if p.top_k > 0 and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    if p.typical_p < 1.0:
        logp = torch.log(probs.clamp_min(1e-30))
        entropy = -(probs * logp).sum()
        shifted = (-logp - entropy).abs()
        order = torch.argsort(shifted)
        cum = probs[order].cumsum(0)
        keep_n = int((cum < p.typical_p).sum().item()) + 1
        mask = torch.ones_like(probs, dtype=torch.bool)
        mask[order[:keep_n]] = False
        probs = probs.masked_fill(mask, 0.0)
    if p.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cum = sorted_probs.cumsum(0)
        remove = cum - sorted_probs > p.top_p * cum[-1]
        sorted_probs = sorted_probs.masked_fill(remove, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return probs


class BatchSampler:
    def __init__(self, *, vocab_size: int, eos_token_ids: list[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_ids = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
        # What a row whose grammar allows no token at all gets instead of a draw from NaN probabilities: the
        # constraint refuses it, which ends that sequence (finish_reason stop) and no other.
        self.dead_end_token = int(self.eos_ids[0]) if len(self.eos_ids) else 0

    @staticmethod
    def argmax_only(row: SamplingRow) -> bool:
        """The row's next token is the argmax of its logits, EOS masking aside (greedy, nothing else adjusted)."""
        p = row.params
        return p.greedy and not p.logprobs and not p.logit_bias and not p.needs_penalties and row.constraint is None

    @staticmethod
    def suppresses_eos(row: SamplingRow) -> bool:
        # A grammar decides where its row ends: suppressing EOS there (ignore_eos / min_tokens) could leave no
        # allowed token at all once the grammar is complete (NaN probabilities, a failed batch).
        p = row.params
        return row.constraint is None and (p.ignore_eos or len(row.output_ids) < p.min_new_tokens)

    def _is_plain(self, row: SamplingRow) -> bool:
        return self.argmax_only(row) and not self.suppresses_eos(row)

    @torch.inference_mode()
    def greedy_choices(self, logits: torch.Tensor) -> GreedyChoices:
        """What :meth:`sample` would pick for every row as an :meth:`argmax_only` row, both ways (EOS allowed, EOS
        masked), from one batched argmax rather than a clone, a mask and an argmax per row and step. Masking EOS
        only changes rows whose argmax is an EOS token; only those are masked and searched again."""
        logits = logits[:, : self.vocab_size]
        plain = argmax_rows(logits)
        eos = set(self.eos_ids.tolist())
        no_eos = list(plain)
        for i, token in enumerate(plain):
            if token in eos:
                row = logits[i].clone()
                row[self.eos_ids.to(row.device)] = float("-inf")
                no_eos[i] = argmax_rows(row[None])[0]
        return GreedyChoices(plain, no_eos)

    def pick(self, choices: GreedyChoices, index: int, row: SamplingRow) -> int:
        """The token :meth:`sample` would pick for row ``index`` of those logits, for ``row`` as it is now (whether
        EOS is suppressed can change within a step's drafts: min_tokens)."""
        return (choices.no_eos if self.suppresses_eos(row) else choices.plain)[index]

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, rows: list[SamplingRow]) -> list[Sampled]:
        logits = logits[:, : self.vocab_size]
        if all(self._is_plain(r) for r in rows):
            return [Sampled(t, None, None) for t in argmax_rows(logits)]
        # ``logits`` is the runner's fresh output for this step: safe to adjust in place.
        constrained = [i for i, r in enumerate(rows) if r.constraint is not None]
        if constrained:
            bitmask = torch.full((len(rows), bitmask_words(self.vocab_size)), -1, dtype=torch.int32)
            fill_bitmasks([rows[i].constraint for i in constrained], bitmask, constrained)
            if _apply_bitmask_kernel is not None and logits.is_contiguous():
                # One native call over the constrained rows. The torch unpack below is six small parallel ops,
                # and on a busy host each of them can wait on the thread pool.
                _apply_bitmask_kernel(logits, bitmask.to(logits.device), indices=constrained)
            else:
                idx = torch.tensor(constrained)
                allowed = _unpack_bitmask(bitmask[idx], self.vocab_size)
                logits[idx] = logits[idx].masked_fill(~allowed, float("-inf"))
            # Grammars are checked for dead ends before they run (runtime.guidance.deadends); this catches what the
            # check cannot see (a character the vocabulary cannot spell), so one request never fails the batch.
            all_masked = torch.isneginf(logits[constrained]).all(dim=-1).tolist()
            dead_ends = {i for i, masked in zip(constrained, all_masked, strict=True) if masked}
        else:
            dead_ends = set()
        no_eos = [i for i, r in enumerate(rows) if self.suppresses_eos(r)]
        if no_eos and len(self.eos_ids):
            rows_idx = torch.tensor(no_eos, device=logits.device)[:, None]
            logits[rows_idx, self.eos_ids.to(logits.device)[None, :]] = float("-inf")
        for i, row in enumerate(rows):
            p = row.params
            if p.logit_bias or p.needs_penalties:
                line = logits[i]
                if p.logit_bias:
                    ids = torch.tensor(list(p.logit_bias.keys()), dtype=torch.long, device=line.device)
                    line[ids] += torch.tensor(list(p.logit_bias.values()), dtype=line.dtype, device=line.device)
                if p.needs_penalties:
                    self._penalize(line, row)
                _finite(line)
        results: list[Sampled] = []
        logprobs = None
        if any(r.params.logprobs for r in rows):
            logprobs = torch.log_softmax(logits, dim=-1)
        greedy_tokens = argmax_rows(logits)
        for i, row in enumerate(rows):
            p = row.params
            if i in dead_ends:
                results.append(Sampled(self.dead_end_token, None, None))
                continue
            if p.greedy:
                token = greedy_tokens[i]
            else:
                probs = _filter_row(logits[i].cpu(), p)  # per-row CPU generator: reproducible on any device
                token = int(torch.multinomial(probs, 1, generator=row.generator).item())
            lp = top = None
            if p.logprobs and logprobs is not None:
                lp = float(logprobs[i, token])
                if p.top_logprobs > 0:
                    values, ids = torch.topk(logprobs[i], p.top_logprobs)
                    # Tokens a grammar masked have logprob -inf, which JSON cannot carry; -9999.0 as vLLM does.
                    top = list(zip(ids.tolist(), values.clamp_min(-9999.0).tolist(), strict=True))
            results.append(Sampled(token, lp, top))
        return results

    @staticmethod
    def _penalize(line: torch.Tensor, row: SamplingRow) -> None:
        p = row.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.output_ids)), dtype=torch.long, device=line.device)
            vals = line[seen]
            line[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.frequency_penalty or p.presence_penalty) and row.output_ids:
            ids, counts = torch.tensor(row.output_ids, dtype=torch.long, device=line.device).unique(return_counts=True)
            line[ids] -= p.frequency_penalty * counts.to(line.dtype) + p.presence_penalty
