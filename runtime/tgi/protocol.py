"""TGI wire models: ``/generate``, ``/generate_stream`` and ``/`` requests, with TGI's parameter checks.

``parameters`` follows TGI's documentation; like the OpenAI models, unknown fields are rejected with a 400.
Range errors are 422 with TGI's messages (``validation.rs``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from runtime.engine.params import SamplingParams
from runtime.errors import ValidationError


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    best_of: int | None = None
    decoder_input_details: bool | None = False
    details: bool | None = False
    do_sample: bool | None = False
    frequency_penalty: float | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: Annotated[int, Field(ge=0, le=2**64 - 1)] | None = None  # TGI's u64
    stop: list[str] | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool | None = False
    adapter_id: str | None = None
    grammar: dict[str, Any] | None = None  # {"type": "json" | "json_object" | "regex", "value": ...}; runtime.guidance

    def check(self, *, max_best_of: int) -> None:
        def bad(param: str, message: str) -> ValidationError:
            return ValidationError(message, param=param)

        if self.temperature is not None and self.temperature <= 0:
            raise bad("temperature", f"`temperature` must be strictly positive. Given: {self.temperature}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "`repetition_penalty` must be strictly positive")
        if self.frequency_penalty is not None and not -2.0 <= self.frequency_penalty <= 2.0:
            raise bad("frequency_penalty", "`frequency_penalty` must be >= -2.0 and <= 2.0")
        if self.top_p is not None and not 0.0 < self.top_p < 1.0:
            raise bad("top_p", f"`top_p` must be > 0.0 and < 1.0. Given: {self.top_p}")
        if self.typical_p is not None and not 0.0 < self.typical_p < 1.0:
            raise bad("typical_p", f"`typical_p` must be > 0.0 and < 1.0. Given: {self.typical_p}")
        if self.top_k is not None and self.top_k <= 0:
            raise bad("top_k", f"`top_k` must be strictly positive. Given: {self.top_k}")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise bad("max_new_tokens", "`max_new_tokens` must be strictly positive")
        if self.truncate is not None and self.truncate <= 0:
            raise bad("truncate", "`truncate` must be strictly positive")
        if self.top_n_tokens is not None and self.top_n_tokens < 0:
            raise bad("top_n_tokens", "`top_n_tokens` must be >= 0")
        if self.best_of is not None:
            if self.best_of <= 0:
                raise bad("best_of", "`best_of` must be strictly positive")
            if self.best_of > max_best_of:
                raise bad("best_of", f"`best_of` must be <= {max_best_of} (MAX_BEST_OF). Given: {self.best_of}")
            if self.best_of > 1 and not self.sampling:
                raise bad("best_of", "you must use sampling when `best_of` is > 1")
            if self.best_of > 1 and self.seed is not None:
                raise bad("seed", "`seed` must not be set when `best_of` > 1")
        if self.watermark:
            raise bad("watermark", "`watermark` is not supported by this server")
        if self.adapter_id is not None:
            raise bad("adapter_id", "LoRA adapters (`adapter_id`) are not supported by this server")

    @property
    def sampling(self) -> bool:
        # TGI samples when asked to, or when any warper is set.
        return bool(
            self.do_sample
            or (self.temperature is not None and self.temperature != 1.0)
            or self.top_k is not None
            or self.top_p is not None
            or self.typical_p is not None
        )

    def to_sampling_params(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens or 0,
            temperature=(self.temperature or 1.0) if self.sampling else 0.0,
            top_p=self.top_p or 1.0,
            top_k=self.top_k or 0,
            typical_p=self.typical_p or 1.0,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty or 1.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=list(self.stop or []),
            include_stop_str_in_output=True,  # TGI keeps the stop sequence in generated_text
            logprobs=bool(self.details or self.decoder_input_details),
            top_logprobs=self.top_n_tokens or 0,
            prompt_logprobs=bool(self.decoder_input_details),
        )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


def token_json(*, token_id: int, text: str, logprob: float | None, special: bool) -> dict[str, Any]:
    return {"id": token_id, "text": text, "logprob": logprob, "special": special}
