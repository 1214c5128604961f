"""The runtime app in-process (ASGI) with a real engine thread, scheduler and tiny tokenizer over a fake model
runner: for tests of the serving side that need to control what the model does (fail, take its time)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch

from runtime.app import create_app
from runtime.config import RuntimeSettings, resolve_limits
from runtime.engine.kv_cache import PagedKVCache
from runtime.engine.loader import LoadedModel
from runtime.engine.scheduler import Engine, EngineLimits
from runtime.engine.validation import Validator

NEXT_TOKEN = 300
"""The token every step of :class:`FixedRunner` picks (a plain word piece of the tiny tokenizer, never EOS)."""


class FixedRunner:
    """A model that always predicts :data:`NEXT_TOKEN`; each decode step takes ``decode_delay`` seconds, and with
    ``fail_decode`` the first decode step raises (an engine failure mid-stream)."""

    vocab_size = 8192
    device = torch.device("cpu")

    def __init__(self, *, decode_delay: float = 0.0, fail_decode: bool = False) -> None:
        self.decode_delay = decode_delay
        self.fail_decode = fail_decode
        self.kv = PagedKVCache(num_blocks=4097, slots=8, max_blocks_per_seq=256, prefix_caching=False)

    def _logits(self, rows: int) -> torch.Tensor:
        logits = torch.zeros(rows, self.vocab_size)
        logits[:, NEXT_TOKEN] = 1.0
        return logits

    def prefill(self, slots, prompts, cached=None):
        return self._logits(len(prompts))

    def decode(self, tokens, positions):
        if self.fail_decode:
            raise RuntimeError("simulated device failure")
        time.sleep(self.decode_delay)
        return self._logits(len(tokens))

    def move_slot(self, src, dst, length):
        self.kv.move(src, dst)

    def release(self, slot):
        self.kv.free(slot)


@asynccontextmanager
async def fake_engine_app(model_dir: Path, runner: Any, **settings: Any):
    """The app, ready, over ``runner`` with the tokenizer of ``model_dir``; the engine stops on exit."""
    from transformers import AutoTokenizer

    runtime_settings = RuntimeSettings(model_id=str(model_dir), **settings)
    app = create_app(runtime_settings, load=False)
    state = app.state.runtime
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limits = resolve_limits(runtime_settings, max_position_embeddings=2048, on_gpu=False)
    engine = Engine(runner, tokenizer, limits=EngineLimits(
        max_batch_size=4, max_batch_prefill_tokens=limits.max_batch_prefill_tokens,
        max_batch_total_tokens=limits.max_batch_total_tokens, max_total_tokens=limits.max_total_tokens),
        eos_token_ids=[tokenizer.eos_token_id])
    engine.start(asyncio.get_running_loop())
    state.loaded = LoadedModel("generate", tokenizer, limits, "float32", "cpu", None, engine=engine, runner_kind="fake")
    state.validator = Validator(tokenizer, max_input_tokens=limits.max_input_tokens,
                                max_total_tokens=limits.max_total_tokens, max_stop_sequences=4, max_top_n_tokens=5)
    state.ready = True
    try:
        yield app
    finally:
        engine.stop()
