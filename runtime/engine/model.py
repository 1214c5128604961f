"""Model runners: the forward passes the scheduler drives, each owning its KV cache.

Two runners share one interface (:class:`ModelRunner`), selected automatically by :func:`load_runner`:

* :class:`LeanDecoderRunner` for Llama-style decoders (Llama, Mistral, Qwen2): the HF model is loaded the normal
  way (``AutoModelForCausalLM.from_pretrained``) and its weights are reused by a lean forward written here. HF's
  forward costs ~5 ms of Python per step at batch 1 on the tiny model, which dominates a 16M-parameter model;
  this forward fuses QKV and gate/up projections, uses SDPA, and reads/writes a preallocated KV cache of shape
  ``(slots, kv_heads, capacity, head_dim)`` per layer, so a sequence joining or leaving the batch costs no
  cache copies beyond moving one slot (compaction keeps running sequences in slots ``0..B-1`` so decode reads
  plain views). Capacity grows by doubling up to ``max_total_tokens`` so memory follows actual lengths.
* :class:`HFFallbackRunner` for every other architecture: HF's own forward with one ``DynamicCache`` per
  sequence. Correct, not fast; it is also the reference the tests compare the lean forward against.

Slots are the scheduler's: it assigns slot ``i`` to its ``i``-th running sequence and calls :meth:`move_slot`
when it compacts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

log = logging.getLogger("runtime.engine.model")

LEAN_MODEL_TYPES = {"llama", "mistral", "qwen2"}


class ModelRunner(Protocol):
    vocab_size: int
    device: torch.device

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Run the prompts into the given slots; return last-position logits, shape (len(prompts), vocab)."""

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One step for slots ``0..len(tokens)-1``: token ``i`` sits at ``positions[i]``; return (B, vocab)."""

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` cached positions of slot ``src`` into slot ``dst``."""

    def release(self, slot: int) -> None:
        """Forget slot ``slot`` (only the fallback runner holds per-slot state)."""


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    wgu: torch.Tensor
    wd: torch.Tensor


ROW_MULTIPLE = 4
"""Matrix products run on a multiple of this many rows. MKL picks other kernels (another summation order) for
1-3 rows and, with 2 threads, for 5-7 and 9-11 rows (measured on the CI machine's CPU); from 4 rows on, rounded
to a multiple of 4, each row's result is the same whatever the other rows are. Padding the batch there is what
makes greedy output identical alone and inside a busy batch. It costs at most 3 dummy rows, which a decode
step at small batch (bound by reading the weights) hardly notices."""


def _pad_rows(n: int) -> int:
    return max(ROW_MULTIPLE, -(-n // ROW_MULTIPLE) * ROW_MULTIPLE)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Same arithmetic as LlamaRMSNorm (fp32 variance), so outputs match HF's forward.
    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """HF's ``x * cos + rotate_half(x) * sin`` in fewer ops: ``rotate_half(x) * sin == roll(x) * signed_sin``
    exactly (only signs move), so results stay bit-identical to HF's forward."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def lean_unsupported_reason(model: torch.nn.Module, *, max_total_tokens: int) -> str | None:
    """Why the lean forward cannot run this model (None if it can)."""
    config = model.config
    if config.model_type not in LEAN_MODEL_TYPES:
        return f"model_type {config.model_type!r} is not one of {sorted(LEAN_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < max_total_tokens:
        return f"sliding window {window} < max_total_tokens {max_total_tokens}"
    layer = model.model.layers[0]
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(layer.self_attn, name):
            return f"attention has no {name}"
    if hasattr(layer.self_attn, "q_norm"):
        return "attention has q/k norms"
    for name in ("gate_proj", "up_proj", "down_proj"):
        if not hasattr(layer.mlp, name):
            return f"mlp has no {name}"
    rope = getattr(config, "rope_scaling", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) == "dynamic":
        return "dynamic RoPE scaling depends on sequence length"
    return None


class LeanDecoderRunner:
    """Batched Llama-style forward over HF weights with a slot-indexed preallocated KV cache."""

    def __init__(self, model: torch.nn.Module, *, max_slots: int, max_total_tokens: int) -> None:
        config = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.max_slots = max_slots
        self.max_len = max_total_tokens
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.vocab_size = self.lm_head.shape[0]
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            self.layers.append(
                _Layer(
                    ln1=layer.input_layernorm.weight,
                    ln2=layer.post_attention_layernorm.weight,
                    wqkv=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous(),
                    bqkv=torch.cat(biases) if all(b is not None for b in biases) else None,
                    wo=attn.o_proj.weight,
                    bo=attn.o_proj.bias,
                    wgu=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
                    wd=mlp.down_proj.weight,
                )
            )
        self.ffn = self.layers[0].wd.shape[1]
        # RoPE tables for every position, computed by the model's own rotary module (covers rope scaling types).
        positions = torch.arange(self.max_len, device=self.device)[None]
        dummy = torch.zeros(1, device=self.device, dtype=self.dtype)
        cos, sin = inner.rotary_emb(dummy, positions)
        self.cos = cos[0].to(self.dtype).contiguous()
        sin = sin[0].to(self.dtype)
        half = self.head_dim // 2
        self.signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).contiguous()
        self.capacity = min(self.max_len, 256)
        self.k_cache = [self._empty(self.capacity) for _ in self.layers]
        self.v_cache = [self._empty(self.capacity) for _ in self.layers]

    def _empty(self, capacity: int) -> torch.Tensor:
        # Spare slots up to a multiple of ROW_MULTIPLE: decode's dummy rows read them.
        shape = (_pad_rows(self.max_slots), self.num_kv_heads, capacity, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        new_cap = min(new_cap, self.max_len)
        log.info("growing KV cache capacity %d -> %d positions per slot", self.capacity, new_cap)
        for caches in (self.k_cache, self.v_cache):
            for i, old in enumerate(caches):
                grown = self._empty(new_cap)
                grown[:, :, : self.capacity] = old
                caches[i] = grown
        self.capacity = new_cap

    def _qkv(self, layer: _Layer, x: torch.Tensor):
        h = _rms_norm(x, layer.ln1, self.eps)
        qkv = F.linear(h, layer.wqkv, layer.bqkv)
        nqk = (self.num_heads + self.num_kv_heads) * self.head_dim
        return qkv[..., :nqk], qkv[..., nqk:]  # (queries and keys: both get RoPE), values

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = _rms_norm(x, layer.ln2, self.eps)
        gu = F.linear(h, layer.wgu)
        return F.linear(F.silu(gu[..., : self.ffn]) * gu[..., self.ffn :], layer.wd)

    @torch.inference_mode()
    def prefill(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        n = len(prompts)
        lengths = [len(p) for p in prompts]
        t = _pad_rows(max(lengths))  # n * t rows: a multiple of ROW_MULTIPLE (batch-invariant GEMMs)
        self._ensure_capacity(t + 1)
        ids = torch.zeros((n, t), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        ids = ids.to(self.device)
        slot_idx = torch.tensor(slots, device=self.device)
        cos = self.cos[:t][None, :, None]  # (1, T, 1, hd)
        sin = self.signed_sin[:t][None, :, None]
        nh = self.num_heads
        x = F.embedding(ids, self.embed)
        for li, layer in enumerate(self.layers):
            qk, v = self._qkv(layer, x)
            qk = _rope(qk.view(n, t, nh + self.num_kv_heads, self.head_dim), cos, sin)
            q = qk[:, :, :nh].transpose(1, 2)
            k = qk[:, :, nh:].transpose(1, 2)
            v = v.view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
            self.k_cache[li][slot_idx, :, :t] = k
            self.v_cache[li][slot_idx, :, :t] = v
            # Attention per sequence over exactly its own tokens: the same kernel call it gets when alone.
            attn = x.new_zeros((n, t, nh * self.head_dim))
            for i, length in enumerate(lengths):
                out = F.scaled_dot_product_attention(
                    q[i : i + 1, :, :length], k[i : i + 1, :, :length], v[i : i + 1, :, :length],
                    is_causal=True, scale=self.scale, enable_gqa=True,
                )
                attn[i, :length] = out[0].transpose(0, 1).reshape(length, -1)
            x = x + F.linear(attn, layer.wo, layer.bo)
            x = x + self._mlp(layer, x)
        last = torch.tensor([length - 1 for length in lengths], device=self.device)
        x = x[torch.arange(n, device=self.device), last]
        rows = _pad_rows(n)
        if rows > n:
            x = torch.cat([x, x.new_zeros((rows - n, x.shape[1]))])
        x = _rms_norm(x, self.final_norm, self.eps)
        return F.linear(x, self.lm_head)[:n].float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        b = len(tokens)
        rows_padded = _pad_rows(b)
        filler = [0] * (rows_padded - b)  # dummy rows (token 0 at position 0): computed, never stored or used
        self._ensure_capacity(max(positions) + 1)
        ids = torch.tensor(tokens + filler, device=self.device)
        pos = torch.tensor(positions + filler, device=self.device)
        rows = torch.arange(b, device=self.device)
        real_pos = pos[:b]
        length = max(positions) + 1
        mask = (torch.arange(length, device=self.device)[None] <= pos[:, None])[:, None, None]  # (B, 1, 1, L)
        cos = self.cos[pos][:, None]  # (B, 1, hd)
        sin = self.signed_sin[pos][:, None]
        nh = self.num_heads
        x = F.embedding(ids, self.embed)
        for li, layer in enumerate(self.layers):
            qk, v = self._qkv(layer, x)
            qk = _rope(qk.view(rows_padded, nh + self.num_kv_heads, self.head_dim), cos, sin)
            q = qk[:, :nh, None]  # (B, heads, 1, hd)
            kc, vc = self.k_cache[li], self.v_cache[li]
            kc[rows, :, real_pos] = qk[:b, nh:]
            vc[rows, :, real_pos] = v[:b].view(b, self.num_kv_heads, self.head_dim)
            # One masked SDPA over the padded batch. Measured: with 2+ rows its per-row result does not depend on
            # the other rows nor on the padded length (a single row takes another kernel path: the row padding
            # above avoids it). Dummy rows attend to position 0 of spare slots, so their softmax stays finite.
            attn = F.scaled_dot_product_attention(
                q, kc[:rows_padded, :, :length], vc[:rows_padded, :, :length], attn_mask=mask, scale=self.scale,
                enable_gqa=True,
            )
            x = x + F.linear(attn.reshape(rows_padded, -1), layer.wo, layer.bo)
            x = x + self._mlp(layer, x)
        x = _rms_norm(x, self.final_norm, self.eps)
        return F.linear(x, self.lm_head)[:b].float()

    @torch.inference_mode()
    def move_slot(self, src: int, dst: int, length: int) -> None:
        for caches in (self.k_cache, self.v_cache):
            for cache in caches:
                cache[dst, :, :length] = cache[src, :, :length]

    def release(self, slot: int) -> None:
        return None


class HFFallbackRunner:
    """HF's own forward, one DynamicCache per sequence: any causal LM works, one sequence per forward."""

    def __init__(self, model: torch.nn.Module, *, max_slots: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.caches: list[object | None] = [None] * max_slots

    @torch.inference_mode()
    def _forward(self, slot: int, ids: list[int], start: int) -> torch.Tensor:
        from transformers import DynamicCache

        if start == 0:
            self.caches[slot] = DynamicCache(config=self.model.config)
        input_ids = torch.tensor([ids], device=self.device)
        positions = torch.arange(start, start + len(ids), device=self.device)[None]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            past_key_values=self.caches[slot],
            use_cache=True,
        )
        return out.logits[0, -1].float()

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        return torch.stack([self._forward(s, p, 0) for s, p in zip(slots, prompts, strict=True)])

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        return torch.stack([self._forward(i, [t], p) for i, (t, p) in enumerate(zip(tokens, positions, strict=True))])

    def move_slot(self, src: int, dst: int, length: int) -> None:
        self.caches[dst] = self.caches[src]
        self.caches[src] = None

    def release(self, slot: int) -> None:
        self.caches[slot] = None


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """DTYPE (TGI: float16|bfloat16; we also accept float32). CPU defaults to float32, CUDA to bfloat16."""
    if name:
        table = {"float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
        return table[name]
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_causal_lm(model_id: str, *, revision: str | None, token: str | None, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, token=token, dtype=dtype)
    return model.to(device).eval()


def make_runner(model: torch.nn.Module, *, max_slots: int, max_total_tokens: int, force_hf: bool = False) -> ModelRunner:
    """The lean runner when the architecture allows it, HF's forward otherwise."""
    reason = "forced" if force_hf else lean_unsupported_reason(model, max_total_tokens=max_total_tokens)
    if reason is None:
        log.info("using the lean batched forward (%s)", model.config.model_type)
        return LeanDecoderRunner(model, max_slots=max_slots, max_total_tokens=max_total_tokens)
    log.info("using HF's forward with per-sequence DynamicCache (%s)", reason)
    return HFFallbackRunner(model, max_slots=max_slots)
