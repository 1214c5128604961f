"""Runtime settings: TGI's environment variables and the matching ``--kebab-case`` flags.

Flags override the environment (``--max-input-tokens 512`` beats ``MAX_INPUT_TOKENS``), as TGI's launcher does.
Limits left unset are derived from the model config once it is loaded (:meth:`RuntimeSettings.resolve`), the
way TGI derives them: ``max_total_tokens`` from ``max_position_embeddings``, ``max_input_tokens`` one less,
``max_batch_prefill_tokens`` = ``max_input_tokens + 50``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CPU_BATCH_SIZE = 32
DEFAULT_GPU_BATCH_SIZE = 128
FALLBACK_MAX_POSITIONS = 4096


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True)

    model_id: str = Field(default="/repository", description="local path or hub repo id")
    revision: str | None = None
    gguf_file: str | None = Field(
        default=None,
        description="the .gguf file of the repository to serve (a path relative to it); unset: a repository of "
                    ".gguf files without config.json serves its best quantization (runtime/engine/gguf_files.py)",
    )
    port: int = 3000
    hostname: str = "0.0.0.0"
    max_input_tokens: int | None = Field(
        default=None, validation_alias=AliasChoices("max_input_tokens", "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")
    )
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_batch_total_tokens: int | None = None
    max_batch_size: int | None = None
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_client_batch_size: int = 4
    dtype: str | None = Field(default=None, pattern="^(float16|bfloat16|float32)$")
    hf_token: str | None = Field(
        default=None, validation_alias=AliasChoices("hf_token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    )
    api_key: str | None = None
    payload_limit: int = 2_000_000
    max_json_depth: int = Field(
        default=64, ge=2,
        description="deepest nesting of arrays/objects accepted in a request body, and in JSON sent inside one as a "
                    "string (a grammar's schema, tool-call arguments); deeper is a 400",
    )
    served_model_name: str | None = None
    sse_keepalive_interval: float = 10.0
    num_threads: int | None = Field(default=None, description="torch intra-op threads (default: all cores)")
    force_hf_forward: bool = Field(default=False, description="use HF's forward even for Llama-style models")
    speculate: int = Field(
        default=3, ge=0,
        description="TGI's SPECULATE: n-gram draft tokens per sequence and decode step, verified in that step "
                    "(greedy requests; rows the padded batch computes anyway first, then one extra row per "
                    "sequence whose drafts are being accepted; 0 turns it off)",
    )
    keep_alive_timeout: int = 75
    prefix_caching: bool = Field(
        default=True,
        description="TGI's PREFIX_CACHING: reuse the KV cache of prompt prefixes seen before (full blocks of 16 "
                    "tokens); false prefills every prompt whole",
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1,
        description="on CUDA, the fraction of the GPU's memory this server may use: the KV cache pool gets what "
                    "the weights and a warm-up forward leave of it",
    )
    kv_cache_memory_fraction: float = Field(
        default=0.5, gt=0, le=1,
        description="on CPU, the fraction of available memory (MemAvailable, or the cgroup limit's headroom) the "
                    "KV cache pool may take, when MAX_BATCH_TOTAL_TOKENS does not size it",
    )

    def model_name(self) -> str:
        return self.served_model_name or self.model_id


@dataclass(frozen=True)
class ResolvedLimits:
    """Limits after filling the unset ones from the model config."""

    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    max_batch_size: int


def resolve_limits(settings: RuntimeSettings, *, max_position_embeddings: int | None, on_gpu: bool) -> ResolvedLimits:
    positions = max_position_embeddings or FALLBACK_MAX_POSITIONS
    total = settings.max_total_tokens or (
        positions if settings.max_input_tokens is None else max(positions, settings.max_input_tokens + 1)
    )
    max_input = settings.max_input_tokens if settings.max_input_tokens is not None else total - 1
    if max_input >= total:
        raise ValueError(f"MAX_INPUT_TOKENS ({max_input}) must be < MAX_TOTAL_TOKENS ({total})")
    batch_size = settings.max_batch_size or (DEFAULT_GPU_BATCH_SIZE if on_gpu else DEFAULT_CPU_BATCH_SIZE)
    prefill = settings.max_batch_prefill_tokens or max_input + 50
    if prefill < max_input:
        raise ValueError(f"MAX_BATCH_PREFILL_TOKENS ({prefill}) must be >= MAX_INPUT_TOKENS ({max_input})")
    # The default is provisional: the loader replaces it with what the KV cache pool holds once it is sized.
    batch_total = settings.max_batch_total_tokens or batch_size * total
    if batch_total < total:
        raise ValueError(f"MAX_BATCH_TOTAL_TOKENS ({batch_total}) must be >= MAX_TOTAL_TOKENS ({total})")
    return ResolvedLimits(
        max_input_tokens=max_input,
        max_total_tokens=total,
        max_batch_prefill_tokens=prefill,
        max_batch_total_tokens=batch_total,
        max_batch_size=batch_size,
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_settings(argv: list[str] | None) -> RuntimeSettings:
    """Environment first, then command-line flags named after the same settings (``--model-id`` ...)."""
    parser = argparse.ArgumentParser(prog="python -m runtime", description="OpenAI- and TGI-compatible server")
    for name, field in RuntimeSettings.model_fields.items():
        flags = [_flag(name)]
        if name == "max_input_tokens":
            flags.append("--max-input-length")
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action="store_true", default=None, help=field.description)
        else:
            parser.add_argument(*flags, dest=name, default=None, help=field.description or name.upper())
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return RuntimeSettings(**overrides)
