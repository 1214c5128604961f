"""Incremental detokenization and stop strings, per sequence.

Decoding token by token is not ``decode([id])``: byte-level BPE splits UTF-8 characters across tokens and
SentencePiece tokenizers decide leading spaces from context. Fast tokenizers use the Rust ``DecodeStream``
(which buffers incomplete characters); slow ones fall back to the prefix/read-offset scheme TGI and vLLM use.

Stop strings can span token boundaries, so :class:`StopStringMatcher` holds back the tail of the text that could
still grow into a stop string and releases it once it cannot.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turns one sequence's tokens into text deltas."""

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self._skip = skip_special_tokens
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is not None:
            from tokenizers.decoders import DecodeStream

            self._backend = backend
            self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        else:
            self._backend = None
            self._tokenizer = tokenizer
            self._ids: list[int] = []
            self._prefix = 0
            self._read = 0

    def step(self, token_id: int) -> str:
        if self._backend is not None:
            return self._stream.step(self._backend, token_id) or ""
        self._ids.append(token_id)
        prefix_text = self._tokenizer.decode(self._ids[self._prefix : self._read], skip_special_tokens=self._skip)
        full_text = self._tokenizer.decode(self._ids[self._prefix :], skip_special_tokens=self._skip)
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full_text[len(prefix_text) :]
        return ""


class StopStringMatcher:
    """Finds stop strings in streamed text and decides how much text is safe to release."""

    def __init__(self, stops: list[str], *, include_stop: bool = False) -> None:
        self.stops = [s for s in stops if s]
        self.include_stop = include_stop
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.released = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Append ``delta``; return the newly releasable text. Sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        if not self.stops:
            self.text += delta
            self.released = len(self.text)
            return delta
        start = max(0, len(self.text) - self._hold)
        self.text += delta
        best = -1
        best_stop = ""
        for stop in self.stops:
            idx = self.text.find(stop, start)
            if idx != -1 and (best == -1 or idx < best):
                best, best_stop = idx, stop
        if best != -1:
            self.stopped = True
            end = best + len(best_stop) if self.include_stop else best
            self.text = self.text[:end]
            out = self.text[self.released :]
            self.released = len(self.text)
            return out
        safe = max(self.released, len(self.text) - self._hold)
        # Hold back only a suffix that is a prefix of some stop string.
        for cut in range(max(self.released, len(self.text) - self._hold), len(self.text)):
            tail = self.text[cut:]
            if any(stop.startswith(tail) for stop in self.stops):
                safe = cut
                break
        else:
            safe = len(self.text)
        out = self.text[self.released : safe]
        self.released = safe
        return out

    def flush(self) -> str:
        """Release whatever was held back (the sequence ended without a stop string)."""
        out = self.text[self.released :]
        self.released = len(self.text)
        return out
