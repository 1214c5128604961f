"""The continuous-batching engine: one thread owns the queue, the running batch and the model.

Requests arrive from the asyncio side (:meth:`Engine.submit`) into a waiting queue. Between decode steps the
engine thread admits waiting sequences while slots, KV blocks and the ``max_batch_prefill_tokens`` /
``max_batch_total_tokens`` budgets allow, prefills them in one batched forward, then runs one decode forward for
every running sequence. Finished or cancelled sequences leave at once: the last running sequence is moved into
the freed slot so running sequences always occupy slots ``0..B-1`` (a block table row moves, nothing else).

KV memory is the runner's paged cache (:mod:`runtime.engine.kv_cache`). Admission takes the blocks a prompt
needs, after matching its leading full blocks against the prefix cache (those are shared, not recomputed: the
prefill runs only on the rest). Decoding takes one more block whenever a sequence crosses a block boundary; when
none is left, the most recently admitted sequence is preempted (vLLM's recompute policy): its blocks go back, it
returns to the head of the queue with what it generated so far, and on readmission its prompt and output are
prefilled again (mostly from the prefix cache) and it continues where it stopped. Requests wait; nothing fails
for want of memory.

The thread spends most of its time inside torch, which releases the GIL, so the HTTP event loop keeps serving.
Each step's token events are handed to the loop in one ``call_soon_threadsafe`` call; each sequence's consumer
reads an ``asyncio.Queue``. Cancelling (client disconnect) sets a flag the engine honours before the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from runtime.engine.constraint_protocol import TokenConstraint
from runtime.engine.detokenizer import IncrementalDetokenizer, StopStringMatcher
from runtime.engine.kv_cache import OutOfBlocks
from runtime.engine.model import ModelRunner, pad_rows
from runtime.engine.params import EngineFailure, FinishReason, GenerationRequest, SamplingParams, TokenEvent, TopToken
from runtime.engine.sampling import BatchSampler
from runtime.engine.speculation import (
    PAID_DRAFT_MIN_ACCEPTANCE,
    PAID_DRAFT_PROBE_EVERY,
    SPEC_DECAY,
    NgramProposer,
)

log = logging.getLogger("runtime.engine")


@dataclass
class EngineLimits:
    max_batch_size: int
    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    max_total_tokens: int


@dataclass
class EngineStats:
    """Plain counters read by the metrics collector at scrape time (no locking needed for int reads)."""

    queue_size: int = 0
    batch_size: int = 0
    batch_tokens: int = 0
    max_batch_size_reached: int = 0
    steps: int = 0
    decode_batch_sum: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache (vLLM's counters, in tokens)
    prefix_cache_hits: int = 0  # of which found there: reused instead of prefilled
    preemptions: int = 0
    kv_usage: float = 0.0  # fraction of the KV pool held by running sequences


class Sequence:
    """One output sequence (a request with ``n=2`` has two), owned by the engine thread."""

    def __init__(self, request: GenerationRequest, index: int, stream: SequenceStream, tokenizer: Any) -> None:
        self.request = request
        self.index = index
        self.params: SamplingParams = request.params
        self.prompt_ids = request.prompt_ids
        self.output_ids: list[int] = []
        self.stream = stream
        p = self.params
        self.seed: int | None = None
        self.generator: torch.Generator | None = None
        if not p.greedy:
            self.seed = (p.seed if p.seed is not None else random.randrange(2**63)) + index
            # torch takes seeds in [-2**63, 2**64); modulo 2**64 is how it maps a negative one, so every seed the
            # protocols accept (and seed + index past the top) seeds the generator the same way as before.
            self.generator = torch.Generator().manual_seed(self.seed % 2**64)
        self.constraint: TokenConstraint | None = None
        self.detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=p.skip_special_tokens)
        self.stops = StopStringMatcher(p.stop, include_stop=p.include_stop_str_in_output)
        self.first_event = True
        self.finished: FinishReason | None = None
        self.proposer: NgramProposer | None = None  # built the first time this sequence may speculate
        self.spec_proposed = 0.0  # this sequence's recent drafts and how many were accepted (decaying counts)
        self.spec_accepted = 0.0
        self.decode_steps = 0
        self.cached_tokens: int | None = None  # prompt tokens the prefix cache supplied at first admission
        self.cached_now = 0  # ... and at the latest admission (what the next prefill skips)
        self.committed_blocks = 0  # leading blocks already filed in the prefix cache
        self.admission = 0  # when it was (last) admitted: preemption takes the newest

    def tokens(self) -> list[int]:
        """What its cache must hold before it can decode again: the prompt, then (after a preemption) its output."""
        return self.prompt_ids + self.output_ids if self.output_ids else self.prompt_ids

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


class SequenceStream:
    """The asyncio side of one sequence: its events land on the request's shared queue as ``(index, event)``."""

    def __init__(self, engine: Engine, request_id: str, index: int, queue: asyncio.Queue) -> None:
        self.engine = engine
        self.request_id = request_id
        self.index = index
        self.queue = queue
        self.cancelled = False
        self.finished = False
        self.arrival = time.monotonic()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def cancel(self) -> None:
        """Stop generating (client went away); the engine frees the slot before its next step."""
        if not self.finished and not self.cancelled:
            self.cancelled = True
            self.engine.wake()


class RequestHandle:
    """All sequences of one request (``n`` of them) and their merged event queue."""

    def __init__(self, streams: list[SequenceStream], queue: asyncio.Queue) -> None:
        self.streams = streams
        self.queue: asyncio.Queue[tuple[int, TokenEvent | EngineFailure]] = queue

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.streams)

    def cancel(self) -> None:
        for stream in self.streams:
            stream.cancel()


class Engine:
    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        *,
        limits: EngineLimits,
        eos_token_ids: list[int],
        on_token_gap: Callable[[float], None] | None = None,
        score_prompt: Callable[[list[int], int], list[float]] | None = None,
        speculate: int = 0,
        prefix_caching: bool = True,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.vocab_size = runner.vocab_size
        self.limits = limits
        self.eos_ids = set(eos_token_ids)
        self.sampler = BatchSampler(vocab_size=self.vocab_size, eos_token_ids=eos_token_ids)
        self.stats = EngineStats()
        self.on_token_gap = on_token_gap
        self._score_prompt = score_prompt
        # Draft tokens per sequence and step (n-gram speculation, see runtime.engine.speculation); needs a runner
        # that takes several rows of one sequence.
        self.speculate = speculate if getattr(runner, "supports_slots", False) else 0
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.prefix_caching = prefix_caching and runner.kv.prefix_caching
        self._admissions = itertools.count(1)

    @property
    def kv(self):
        """The runner's block bookkeeping (the runner may reallocate its pool before the engine starts)."""
        return self.runner.kv

    # ---- asyncio side -------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def submit(self, request: GenerationRequest, *, n: int = 1) -> RequestHandle:
        """Queue ``n`` sequences for ``request`` (call from the event loop)."""
        queue: asyncio.Queue = asyncio.Queue()
        streams = [SequenceStream(self, request.request_id, i, queue) for i in range(n)]
        seqs = [Sequence(request, i, s, self.tokenizer) for i, s in enumerate(streams)]
        with self._cond:
            self._waiting.extend(seqs)
            self.stats.queue_size = len(self._waiting)
            self._cond.notify_all()
        return RequestHandle(streams, queue)

    def _deliver(self, batch: list[tuple[SequenceStream, TokenEvent | EngineFailure]]) -> None:
        now = time.monotonic()
        for stream, event in batch:
            if isinstance(event, TokenEvent):
                if stream.first_token_at is None:
                    stream.first_token_at = now
                elif self.on_token_gap is not None and stream.last_token_at is not None:
                    self.on_token_gap(now - stream.last_token_at)
                stream.last_token_at = now
                if event.finish_reason is not None:
                    stream.finished = True
            else:
                stream.finished = True
            stream.queue.put_nowait((stream.index, event))

    # ---- engine thread --------------------------------------------------------------------------------
    def warmup(self, prompt_len: int) -> None:
        """Run a prefill and a few decode steps so the first real request does not pay one-time costs."""
        n = min(self.limits.max_batch_size, 4)
        ids = [1] * max(1, prompt_len)
        self.runner.prefill(list(range(n)), [ids] * n)
        for step in range(3):
            self.runner.decode([1] * n, [len(ids) + step] * n)
        for slot in range(n):
            self.runner.release(slot)

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                self._drop_cancelled_waiting()
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    return
                admitted = self._admit()
                self.stats.queue_size = len(self._waiting)
            try:
                self._step(admitted)
            except Exception as exc:  # a model failure must fail the requests, not kill the engine
                log.exception("engine step failed")
                victims = list(dict.fromkeys(self._running + admitted))  # admitted may already be running
                failed = [(s.stream, EngineFailure(f"Request failed during generation: {exc}")) for s in victims]
                for slot in range(len(self._running) + len(admitted)):
                    self.runner.release(slot)
                self._running = []
                self._post(failed)

    def _drop_cancelled_waiting(self) -> None:
        if any(s.stream.cancelled for s in self._waiting):
            self._waiting = deque(s for s in self._waiting if not s.stream.cancelled)

    def _admit(self) -> list[Sequence]:
        """Take waiting sequences into the batch, in order, while the batch size, the prefill budget (uncached
        tokens, packed unpadded as TGI counts them), ``max_batch_total_tokens`` (positions held, where it is below
        the pool's size) and the pool's blocks allow. Each admitted sequence has its blocks before this returns:
        matched prefix blocks shared, the rest taken from the pool."""
        admitted: list[Sequence] = []
        kv = self.kv
        budget = self.limits.max_batch_total_tokens
        capped = budget < kv.capacity_tokens
        held = sum(kv.blocks_for(s.length) for s in self._running) * kv.block_size if capped else 0
        prefill_tokens = 0
        while self._waiting and len(self._running) + len(admitted) < self.limits.max_batch_size:
            seq = self._waiting[0]
            busy = bool(self._running or admitted)
            slot = len(self._running) + len(admitted)
            tokens = seq.tokens()
            if capped and busy and held + kv.blocks_for(len(tokens)) * kv.block_size > budget:
                break
            kv.free(slot)
            # Prompt logprobs need every prompt position computed (runner.score_prompt recomputes them in place).
            reuse = self.prefix_caching and not seq.params.prompt_logprobs
            cached = kv.match_prefix(slot, tokens) if reuse else 0
            new_tokens = len(tokens) - cached
            # One block in reserve per running sequence, so admitting does not force an immediate preemption.
            reserve = len(self._running) + len(admitted)
            fits = kv.blocks_needed(slot, len(tokens)) + reserve <= kv.available() or not busy
            if (admitted and prefill_tokens + new_tokens > self.limits.max_batch_prefill_tokens) or not fits:
                kv.free(slot)
                break
            try:
                kv.allocate(slot, len(tokens))
            except OutOfBlocks:  # alone and still too long: the pool is smaller than one sequence can grow
                kv.free(slot)
                self._waiting.popleft()
                self._post([(seq.stream, EngineFailure("Request needs more KV cache than this server has"))])
                continue
            self._waiting.popleft()
            self.stats.prefix_cache_queries += len(tokens)
            self.stats.prefix_cache_hits += cached
            if seq.cached_tokens is None:
                seq.cached_tokens = cached
            seq.cached_now = cached
            seq.admission = next(self._admissions)
            admitted.append(seq)
            held += kv.blocks_for(len(tokens)) * kv.block_size
            prefill_tokens += new_tokens
        return admitted

    def _post(self, batch: list[tuple[SequenceStream, TokenEvent | EngineFailure]]) -> None:
        if batch and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, batch)

    def _step(self, admitted: list[Sequence]) -> None:
        events: list[tuple[SequenceStream, TokenEvent | EngineFailure]] = []
        self._evict()  # cancelled since the last step
        if admitted:
            for seq in admitted:
                if seq.params.constraint_factory is not None and seq.constraint is None:
                    seq.constraint = seq.params.constraint_factory()
            first_slot = len(self._running)
            slots = list(range(first_slot, first_slot + len(admitted)))
            logits = self.runner.prefill(slots, [s.tokens() for s in admitted], [s.cached_now for s in admitted])
            self._running.extend(admitted)
            self._advance(admitted, logits, events)
            self._commit(admitted, first_slot)
            self._evict()
            self._post(events)  # first tokens go out before the decode step: lower time-to-first-token
            events = []
        if self._running:
            self._decode(events)
            self._commit(self._running, 0)
            self._evict()
        self.stats.batch_size = len(self._running)
        self.stats.batch_tokens = sum(s.length for s in self._running)
        self.stats.kv_usage = self.kv.usage()
        self._post(events)

    def _commit(self, seqs: list[Sequence], first_slot: int) -> None:
        """File the sequences' newly completed blocks in the prefix cache (positions up to ``length - 1`` are
        written: the newest token's keys are computed by the next step)."""
        if not self.prefix_caching:
            return
        size = self.kv.block_size
        for slot, seq in enumerate(seqs, start=first_slot):
            written = seq.length - 1
            if written // size > seq.committed_blocks:
                self.kv.commit(slot, seq.prompt_ids + seq.output_ids, written)
                seq.committed_blocks = written // size

    def _reserve(self) -> None:
        """Give every running sequence the block its next position needs; when the pool is dry, preempt the
        newest sequence (it may be the one asking) and try again."""
        slot = 0
        while slot < len(self._running):
            try:
                self.kv.allocate(slot, self._running[slot].length)
            except OutOfBlocks:
                newest = max(range(len(self._running)), key=lambda i: self._running[i].admission)
                self._preempt(newest)
                slot = 0
                continue
            slot += 1

    def _preempt(self, slot: int) -> None:
        seq = self._running[slot]
        log.info("KV cache full: preempting request %s (%d tokens) back to the queue", seq.stream.request_id,
                 seq.length)
        self.stats.preemptions += 1
        self._remove(slot)
        seq.committed_blocks = 0
        with self._cond:
            self._waiting.appendleft(seq)
            self.stats.queue_size = len(self._waiting)

    def _decode(self, events: list) -> None:
        self._reserve()
        running = self._running
        if not running:
            return
        b = len(running)
        self.stats.max_batch_size_reached = max(self.stats.max_batch_size_reached, b)
        self.stats.decode_batch_sum += b
        drafts = self._drafts(running)
        if drafts is not None:
            for slot, (seq, draft) in enumerate(zip(running, drafts, strict=True)):
                try:  # drafts only take blocks that are free: never worth a preemption
                    self.kv.allocate(slot, seq.length + len(draft))
                except OutOfBlocks:
                    draft.clear()
            drafts = drafts if any(drafts) else None
        if drafts is None:
            logits = self.runner.decode([s.output_ids[-1] for s in running], [s.length - 1 for s in running])
        else:
            # Row layout: each sequence's [last token, draft...] at consecutive positions of its own slot.
            first_rows, tokens, positions, slots = [], [], [], []
            for slot, (seq, draft) in enumerate(zip(running, drafts, strict=True)):
                first_rows.append(len(tokens))
                tokens += [seq.output_ids[-1], *draft]
                positions += range(seq.length - 1, seq.length + len(draft))
                slots += [slot] * (1 + len(draft))
            logits = self.runner.decode(tokens, positions, slots)
        self.stats.steps += 1
        if drafts is None:
            self._advance(running, logits, events)
        else:
            self._advance(running, logits[first_rows], events)
            self._verify(running, drafts, first_rows, logits, events)

    def _drafts(self, running: list[Sequence]) -> list[list[int]] | None:
        """Drafts for this step; None when there are none.

        Rows the padded batch computes anyway are free: they go to drafts first (a lone stream gets 3). Beyond
        them a sequence whose recent drafts were mostly accepted gets one paid row (see speculation.py's
        PAID_DRAFT_MIN_ACCEPTANCE); adding those can make new padding rows, which lengthen drafts for free."""
        if not self.speculate:
            return None
        rooms: list[int] = []
        paid = 0
        for seq in running:
            room = 0
            if not seq.stream.cancelled and self.sampler.argmax_only(seq):
                room = min(
                    self.speculate,
                    seq.params.max_new_tokens - len(seq.output_ids) - 1,
                    self.limits.max_total_tokens - seq.length,
                )
                if room > 0 and seq.proposer is None:
                    seq.proposer = NgramProposer(seq.prompt_ids + seq.output_ids)
            pays = room > 0 and self._worth_a_row(seq) and bool(seq.proposer.propose(1))
            paid += pays
            rooms.append(room if pays else -room)  # negative: free rows only
        free = pad_rows(len(running) + paid) - len(running) - paid
        drafts: list[list[int]] = []
        for seq, room in zip(running, rooms, strict=True):
            own = 1 if room > 0 else 0
            want = min(abs(room), own + max(free, 0))
            draft = seq.proposer.propose(want) if want > 0 else []
            free -= max(len(draft) - own, 0)
            drafts.append(draft)
            seq.decode_steps += 1
        return drafts if any(drafts) else None

    @staticmethod
    def _worth_a_row(seq: Sequence) -> bool:
        """Whether this sequence's drafts have earned a row of their own: its decaying acceptance rate (a new
        sequence starts at 1/1) is at least PAID_DRAFT_MIN_ACCEPTANCE; below it, one probe every
        PAID_DRAFT_PROBE_EVERY steps keeps the estimate current."""
        rate = (seq.spec_accepted + 1.0) / (seq.spec_proposed + 1.0)
        return rate >= PAID_DRAFT_MIN_ACCEPTANCE or seq.decode_steps % PAID_DRAFT_PROBE_EVERY == 0

    def _verify(self, seqs: list[Sequence], drafts: list[list[int]], first_rows: list[int], logits: torch.Tensor,
                events: list) -> None:
        """Row ``j`` of a sequence predicts the token after draft ``j``: valid while every earlier draft matched the
        token actually chosen. Accepted tokens go through :meth:`_append` one by one (stops, EOS, limits), and each
        is picked with the sequence as it stands then (EOS masking follows min_tokens as plain decoding would)."""
        choices = self.sampler.greedy_choices(logits)
        for seq, draft, first in zip(seqs, drafts, first_rows, strict=True):
            if not draft or seq.stream.cancelled:
                continue
            self.stats.spec_draft_tokens += len(draft)
            accepted = 0
            for j, proposed in enumerate(draft, start=1):
                if seq.finished is not None or proposed != seq.output_ids[-1]:
                    break
                token = self.sampler.pick(choices, first + j, seq)
                events.append((seq.stream, self._append(seq, token, None, None)))
                accepted += 1
            self.stats.spec_accepted_tokens += accepted
            # Only the first draft of a step decides whether a paid row was worth it; decay keeps it recent.
            seq.spec_proposed = seq.spec_proposed * SPEC_DECAY + 1
            seq.spec_accepted = seq.spec_accepted * SPEC_DECAY + (1 if accepted else 0)

    def _advance(self, seqs: list[Sequence], logits: torch.Tensor, events: list) -> None:
        results = self.sampler.sample(logits, seqs)
        for seq, res in zip(seqs, results, strict=True):
            if seq.stream.cancelled:
                continue
            events.append((seq.stream, self._append(seq, res.token_id, res.logprob, res.top)))

    def _append(self, seq: Sequence, token: int, logprob: float | None, top: list[tuple[int, float]] | None) -> TokenEvent:
        p = seq.params
        seq.output_ids.append(token)
        if seq.proposer is not None:
            seq.proposer.append(token)
        finish: FinishReason | None = None
        if seq.constraint is not None and not seq.constraint.accept(token):
            finish = FinishReason.CONSTRAINT
        is_eos = token in self.eos_ids
        token_text = seq.detok.step(token)
        if is_eos and not p.ignore_eos and finish is None:
            finish = FinishReason.EOS_TOKEN
        text = seq.stops.feed(token_text) if not (is_eos and p.skip_special_tokens) else ""
        if finish is None and seq.stops.stopped:
            finish = FinishReason.STOP_SEQUENCE
        if finish is None and seq.constraint is not None and seq.constraint.is_terminated():
            finish = FinishReason.CONSTRAINT
        if finish is None and (
            len(seq.output_ids) >= p.max_new_tokens or seq.length >= self.limits.max_total_tokens
        ):
            finish = FinishReason.LENGTH
        event = TokenEvent(
            token_id=token,
            token_text=token_text,
            text=text,
            logprob=logprob,
            top_logprobs=[TopToken(i, self._token_str(i), lp) for i, lp in top] if top else None,
            special=token in self._special_ids,
            generated_tokens=len(seq.output_ids),
            seed=seq.seed,
        )
        if seq.first_event:
            seq.first_event = False
            event.cached_tokens = seq.cached_tokens or 0
            if p.prompt_logprobs and self._score_prompt is not None:
                lps = self._score_prompt(seq.prompt_ids, self._running.index(seq))
                event.prompt_tokens = [
                    TopToken(i, self._token_str(i), lp) for i, lp in zip(seq.prompt_ids, lps, strict=True)
                ]
        if finish is not None:
            if finish is not FinishReason.STOP_SEQUENCE:
                event.text += seq.stops.flush()
            event.finish_reason = finish
            event.output_text = seq.stops.text
            seq.finished = finish
        return event

    def _token_str(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _evict(self) -> None:
        """Remove finished and cancelled sequences, keeping running ones in slots 0..B-1."""
        i = 0
        while i < len(self._running):
            seq = self._running[i]
            if seq.finished is not None or seq.stream.cancelled:
                self._remove(i)
            else:
                i += 1

    def _remove(self, i: int) -> None:
        """Take the sequence in slot ``i`` out of the batch (its blocks go back); the last one moves into ``i``."""
        last = len(self._running) - 1
        self.runner.release(i)
        if i != last:
            moved = self._running[last]
            self.runner.move_slot(last, i, moved.length)
            self._running[i] = moved
        self.runner.release(last)
        self._running.pop()
