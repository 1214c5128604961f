"""Loading a model directory into either a generation engine or an embedding engine.

The kind is decided from the config's ``architectures``: any ``*ForCausalLM`` serves generation, anything else
loadable with ``AutoModel`` (BertModel, ...) serves embeddings only. A repository of ``.gguf`` files (or the one
``GGUF_FILE`` names) is dequantized at load (``runtime/engine/gguf_files.py``) and then served like any other.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from runtime.config import ResolvedLimits, RuntimeSettings, resolve_limits
from runtime.engine.embeddings import EmbeddingEngine
from runtime.engine.gguf_files import find_gguf, load_gguf_causal_lm
from runtime.engine.kv_cache import BLOCK_SIZE, OutOfBlocks, pool_blocks
from runtime.engine.model import load_causal_lm, make_runner, pick_device, release_freed_memory, resolve_dtype
from runtime.engine.scheduler import Engine, EngineLimits
from runtime.errors import ModelLoadError

log = logging.getLogger("runtime.loader")


@dataclass
class LoadedModel:
    kind: str  # "generate" | "embed"
    tokenizer: Any
    limits: ResolvedLimits
    dtype: str
    device: str
    model_sha: str | None
    engine: Engine | None = None
    embedder: EmbeddingEngine | None = None
    runner_kind: str = ""
    kernels: str | None = None  # which CPU kernels the forward runs on (see LeanDecoderRunner.kernels_name)


def _threads(settings: RuntimeSettings) -> None:
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def _model_sha(model_id: str) -> str | None:
    ref = os.path.join(model_id, ".git", "HEAD")
    return None if not os.path.exists(ref) else open(ref).read().strip()


def _size_kv_pool(runner, engine: Engine, settings: RuntimeSettings, limits: ResolvedLimits,
                  device: torch.device) -> ResolvedLimits:
    """Replace the warm-up pool with the real one, sized from the device's memory now that the weights and the
    warm-up's activations are accounted for (kv_cache.pool_blocks); the limits report what it holds, as TGI's
    ``max_batch_total_tokens`` does."""
    runner.allocate_pool(2)  # give the warm-up pool back before measuring what is free
    if device.type == "cuda":
        torch.cuda.empty_cache()
    release_freed_memory()
    try:
        size = pool_blocks(
            device=device, bytes_per_token=runner.kv_bytes_per_token(), max_total_tokens=limits.max_total_tokens,
            max_batch_size=limits.max_batch_size, max_batch_total_tokens=settings.max_batch_total_tokens,
            cpu_fraction=settings.kv_cache_memory_fraction, gpu_memory_utilization=settings.gpu_memory_utilization,
        )
    except OutOfBlocks as exc:
        raise ModelLoadError(str(exc)) from exc
    runner.allocate_pool(size.num_blocks)
    total = runner.kv.capacity_tokens
    log.info("KV cache: %d blocks of %d positions = %d tokens, %.2f GiB (%s); prefix caching %s",
             size.num_blocks - 1, BLOCK_SIZE, total, size.num_blocks * BLOCK_SIZE * runner.kv_bytes_per_token() / 2**30,
             size.reason, "on" if engine.prefix_caching else "off")
    engine.limits = dataclasses.replace(engine.limits, max_batch_total_tokens=total)
    return dataclasses.replace(limits, max_batch_total_tokens=total)


def load_model(settings: RuntimeSettings) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _threads(settings)
    device = pick_device()
    dtype = resolve_dtype(settings.dtype, device)
    t0 = time.monotonic()
    gguf = find_gguf(settings.model_id, gguf_file=settings.gguf_file, revision=settings.revision,
                     token=settings.hf_token)
    if gguf is not None:
        log.info("serving %s from %s (%s), dequantized", settings.model_id, gguf.filename, gguf.reason)
        config, tokenizer, model = load_gguf_causal_lm(settings.model_id, gguf.filename, revision=settings.revision,
                                                       token=settings.hf_token, dtype=dtype, device=device)
    else:
        if os.path.isdir(settings.model_id) and not os.path.isfile(os.path.join(settings.model_id, "config.json")):
            # transformers would say "Unrecognized model ... should have a `model_type` key", which misleads.
            raise ModelLoadError(f"no config.json in {settings.model_id}")
        config = AutoConfig.from_pretrained(settings.model_id, revision=settings.revision, token=settings.hf_token)
        tokenizer = AutoTokenizer.from_pretrained(settings.model_id, revision=settings.revision,
                                                  token=settings.hf_token)
    architectures = [type(model).__name__] if gguf is not None else list(getattr(config, "architectures", None) or [])
    is_causal = gguf is not None or any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures)
    max_positions = getattr(config, "max_position_embeddings", None)
    limits = resolve_limits(settings, max_position_embeddings=max_positions, on_gpu=device.type == "cuda")
    log.info("loading %s (%s) on %s as %s", settings.model_id, ",".join(architectures) or "?", device, dtype)
    if not is_causal:
        model = AutoModel.from_pretrained(settings.model_id, revision=settings.revision, token=settings.hf_token, dtype=dtype)
        model = model.to(device).eval()
        embedder = EmbeddingEngine(
            model, tokenizer, model_dir=settings.model_id if os.path.isdir(settings.model_id) else None,
            max_input_tokens=limits.max_input_tokens,
        )
        embedder.embed(["warm up"])
        log.info("embedding model ready in %.1fs", time.monotonic() - t0)
        return LoadedModel("embed", tokenizer, limits, str(dtype).removeprefix("torch."), device.type,
                           _model_sha(settings.model_id), embedder=embedder, runner_kind="embedding")
    if gguf is None:
        model = load_causal_lm(settings.model_id, revision=settings.revision, token=settings.hf_token, dtype=dtype,
                               device=device)
    log.info("weights loaded in %.1fs", time.monotonic() - t0)
    # A first pool big enough for the warm-up and one sequence at full length; sized for real after warming up.
    warm_len = min(64, limits.max_input_tokens)
    warm_blocks = min(limits.max_batch_size, 4) * -(-(warm_len + 3) // BLOCK_SIZE)
    first_pool = max(-(-max(limits.max_total_tokens, limits.max_batch_prefill_tokens) // BLOCK_SIZE), warm_blocks) + 8
    runner = make_runner(
        model, max_slots=limits.max_batch_size, max_total_tokens=limits.max_total_tokens,
        force_hf=settings.force_hf_forward, num_blocks=first_pool, prefix_caching=settings.prefix_caching,
    )
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None:
        eos_ids.append(tokenizer.eos_token_id)
    # The lean runner keeps its own (packed) copy of the weights: HF's parameters go now rather than stay alive
    # as a second copy (HF's fallback runner holds the model itself).
    del model
    release_freed_memory()
    engine = Engine(
        runner,
        tokenizer,
        limits=EngineLimits(
            max_batch_size=limits.max_batch_size,
            max_batch_prefill_tokens=limits.max_batch_prefill_tokens,
            max_batch_total_tokens=limits.max_batch_total_tokens,
            max_total_tokens=limits.max_total_tokens,
        ),
        eos_token_ids=eos_ids,
        score_prompt=runner.score_prompt,
        speculate=settings.speculate,
        prefix_caching=settings.prefix_caching,
    )
    t1 = time.monotonic()
    engine.warmup(prompt_len=warm_len)
    if device.type == "cuda":
        # The activation peak of the largest prefill, so the pool is sized from what is left after it.
        profile = min(limits.max_batch_prefill_tokens, limits.max_total_tokens)
        runner.prefill([0], [[1] * profile])
        runner.release(0)
    log.info("warmed up in %.1fs (%s, %s kernels)", time.monotonic() - t1, type(runner).__name__,
             getattr(runner, "kernels_name", "torch"))
    limits = _size_kv_pool(runner, engine, settings, limits, device)
    return LoadedModel("generate", tokenizer, limits, str(dtype).removeprefix("torch."), device.type,
                       _model_sha(settings.model_id), engine=engine, runner_kind=type(runner).__name__,
                       kernels=getattr(runner, "kernels_name", "torch"))
