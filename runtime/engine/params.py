"""What the engine accepts and what it emits: validated requests in, token events out.

Protocol layers (OpenAI, TGI) parse their wire models into a :class:`SamplingParams`; validation
(:mod:`runtime.engine.validation`) turns text into a :class:`GenerationRequest`, the only thing the scheduler
queues. Nothing here imports torch, so the HTTP layer can build these freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from runtime.engine.constraint_protocol import ConstraintFactory

GREEDY_BELOW_TEMPERATURE = 1e-5


class FinishReason(str, enum.Enum):
    """Why a sequence ended, in engine terms; each protocol maps these to its own wire strings."""

    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"
    CONSTRAINT = "constraint"  # the TokenConstraint reported termination (or refused a token)


@dataclass
class SamplingParams:
    """Per-sequence decoding parameters. ``temperature`` 0 (or below 1e-5; ``do_sample`` false upstream) is greedy."""

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_new_tokens: int = 0
    ignore_eos: bool = False
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_logprobs: bool = False
    # Grammar hook (see runtime.engine.constraint_protocol); set by protocol layers, never by clients directly.
    constraint_factory: ConstraintFactory | None = None

    @property
    def greedy(self) -> bool:
        # Below this, dividing logits by the temperature overflows to inf (NaN probabilities); the distribution is
        # the argmax's anyway. vLLM's threshold.
        return self.temperature < GREEDY_BELOW_TEMPERATURE

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


@dataclass
class GenerationRequest:
    """A request that passed validation: token ids within every limit, ready for the queue."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


@dataclass
class TopToken:
    id: int
    text: str
    logprob: float


@dataclass
class TokenEvent:
    """One generated token of one sequence, as delivered to the protocol layer.

    ``text`` is the new output text that is safe to show (held back while it could still become a stop string,
    cut at a stop string); ``token_text`` is the text of this token alone (TGI's ``token.text``).
    ``finish_reason`` is set on the sequence's last event, together with ``output_text``, the full text.
    """

    token_id: int
    token_text: str
    text: str
    logprob: float | None = None
    top_logprobs: list[TopToken] | None = None
    special: bool = False
    finish_reason: FinishReason | None = None
    output_text: str | None = None
    prompt_tokens: list[TopToken] | None = None  # prompt logprobs (TGI decoder_input_details), first event only
    cached_tokens: int | None = None  # prompt tokens the prefix cache supplied, first event only
    generated_tokens: int = 0
    seed: int | None = None


@dataclass
class EngineFailure:
    """Delivered instead of a TokenEvent when the engine failed this sequence (becomes a mid-stream error)."""

    message: str
