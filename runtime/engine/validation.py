"""Parsing text requests into :class:`GenerationRequest` s: chat templates, tokenization and every limit.

Everything here runs before any model work, so a request over a limit costs a tokenizer call, not a slot.
Messages name the parameter and both numbers, as TGI's do.
"""

from __future__ import annotations

import uuid
from typing import Any

from runtime.engine.params import GenerationRequest, SamplingParams
from runtime.errors import TemplateError, ValidationError


class Validator:
    def __init__(
        self,
        tokenizer: Any,
        *,
        max_input_tokens: int,
        max_total_tokens: int,
        max_stop_sequences: int,
        max_top_n_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_stop_sequences = max_stop_sequences
        self.max_top_n_tokens = max_top_n_tokens

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: list[dict], *, tools: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        """Apply the tokenizer's chat template with the variables TGI passes (messages, bos/eos, tools, ...)."""
        if not self.has_chat_template:
            raise TemplateError(
                "Template error: template not found: this model's tokenizer has no chat_template "
                "(tokenizer_config.json or chat_template.jinja); use /v1/completions or /generate instead",
                param="messages",
            )
        from jinja2 import TemplateError as JinjaTemplateError

        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except JinjaTemplateError as exc:
            raise TemplateError(f"Template error: {exc}", param="messages") from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise TemplateError(f"Template error: {exc}", param="messages") from exc

    def tokenize(self, text: str, *, add_special_tokens: bool = True, param: str = "inputs") -> list[int]:
        try:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        except TypeError:
            # The fast tokenizer refuses a str that is not Unicode (a lone surrogate) with a TypeError. Request
            # bodies cannot carry one (runtime.jsonbody); text built from them (a chat template) could.
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(f"`{param}` contains a lone UTF-16 surrogate, which is not text",
                                      param=param) from None
            raise

    def validate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        max_new_tokens_set: bool,
        truncate: int | None = None,
        input_param: str = "inputs",
        max_tokens_param: str = "max_new_tokens",
        request_id: str | None = None,
    ) -> GenerationRequest:
        """Check limits; fill ``max_new_tokens`` when unset (the rest of the context, as TGI v3 / vLLM do)."""
        if truncate is not None:
            if truncate > self.max_input_tokens:
                raise ValidationError(
                    f"`truncate` must be strictly positive and less than or equal to {self.max_input_tokens}. "
                    f"Given: {truncate}",
                    param="truncate",
                )
            prompt_ids = prompt_ids[-truncate:]
        n = len(prompt_ids)
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise ValidationError(f"`{input_param}` token ids must be in 0..{vocab - 1}", param=input_param)
        if n == 0:
            raise ValidationError(f"`{input_param}` cannot be empty", param=input_param)
        if n > self.max_input_tokens:
            raise ValidationError(
                f"`{input_param}` must have less than {self.max_input_tokens} tokens (MAX_INPUT_TOKENS). "
                f"Given: {n}",
                param=input_param,
            )
        if not max_new_tokens_set:
            params.max_new_tokens = self.max_total_tokens - n
            if params.max_new_tokens < 1:
                raise ValidationError(
                    f"`{input_param}` has {n} tokens, which leaves no room to generate within "
                    f"MAX_TOTAL_TOKENS={self.max_total_tokens}",
                    param=input_param,
                )
        if params.max_new_tokens < 1:
            raise ValidationError(f"`{max_tokens_param}` must be strictly positive", param=max_tokens_param)
        if n + params.max_new_tokens > self.max_total_tokens:
            raise ValidationError(
                f"`{input_param}` tokens + `{max_tokens_param}` must be <= {self.max_total_tokens} "
                f"(MAX_TOTAL_TOKENS). Given: {n} `{input_param}` tokens and {params.max_new_tokens} "
                f"`{max_tokens_param}`",
                param=max_tokens_param,
            )
        if len(params.stop) > self.max_stop_sequences:
            raise ValidationError(
                f"`stop` supports up to {self.max_stop_sequences} stop sequences (MAX_STOP_SEQUENCES). "
                f"Given: {len(params.stop)}",
                param="stop",
            )
        if params.top_logprobs > self.max_top_n_tokens:
            raise ValidationError(
                f"top logprobs must be <= {self.max_top_n_tokens} (MAX_TOP_N_TOKENS). Given: {params.top_logprobs}",
                param="top_logprobs",
            )
        if params.min_new_tokens > params.max_new_tokens:
            raise ValidationError(
                f"`min_tokens` ({params.min_new_tokens}) must be <= `{max_tokens_param}` ({params.max_new_tokens})",
                param="min_tokens",
            )
        for token_id in params.logit_bias:
            if not 0 <= token_id < vocab:
                raise ValidationError(
                    f"`logit_bias` token id {token_id} is out of the vocabulary (0..{vocab - 1})", param="logit_bias"
                )
        return GenerationRequest(request_id=request_id or uuid.uuid4().hex, prompt_ids=prompt_ids, params=params)
