"""Model runners: the forward passes the scheduler drives, each owning its KV cache.

Two runners share one interface (:class:`ModelRunner`), selected automatically by :func:`make_runner`:

* :class:`LeanDecoderRunner` for Llama-style decoders (Llama, Mistral, Qwen2): the HF model is loaded the normal
  way (``AutoModelForCausalLM.from_pretrained``) and its weights are reused by a lean forward written here. HF's
  forward spends more time in Python per step than a small model spends computing at batch 1; this forward fuses
  QKV and gate/up projections and reads/writes a paged KV cache: one pool of blocks per layer, shape
  ``(blocks, kv_heads, BLOCK_SIZE, head_dim)``, and a block table per slot (:mod:`runtime.engine.kv_cache`), so
  memory follows actual lengths, sequences join and leave without copies, and prompts share their common
  prefix's blocks. The pool is allocated once (:meth:`LeanDecoderRunner.allocate_pool`), sized from the device's
  memory by the loader. On CPU the whole decoder stack is one call into the native kernels of
  :mod:`runtime.engine.native` (``ek_forward``, which reads keys and values through the block tables), in fp32
  over weights kept in the model's dtype (fp32, or bf16/fp16: half the bytes per decode step); elsewhere, or when
  they cannot be built, it runs on PyTorch ops in the model's dtype, gathering keys and values through the tables.
* :class:`HFFallbackRunner` for every other architecture: HF's own forward with one ``DynamicCache`` per
  sequence. Correct, not fast; it is also the reference the tests compare the lean forward against. Its blocks
  are bookkeeping only (the scheduler's admission works the same), without prefix caching.

Slots are the scheduler's: it assigns slot ``i`` to its ``i``-th running sequence and calls :meth:`move_slot`
when it compacts (a block table row moves; no keys or values do).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from runtime.engine import native
from runtime.engine.kv_cache import BLOCK_SIZE, PagedKVCache

log = logging.getLogger("runtime.engine.model")

LEAN_MODEL_TYPES = {"llama", "mistral", "qwen2"}


class ModelRunner(Protocol):
    vocab_size: int
    device: torch.device
    kv: PagedKVCache
    """The slots' blocks: the scheduler admits and preempts by what it has free (and matches prompt prefixes in
    it); the runner's own methods keep it in step with slots (``prefill``/``decode`` take the blocks their
    positions need, ``move_slot``/``release`` move and free them)."""

    def prefill(self, slots: list[int], prompts: list[list[int]], cached: list[int] | None = None) -> torch.Tensor:
        """Run the prompts into the given slots; return last-position logits, shape (len(prompts), vocab).
        ``cached[i]`` leading positions of prompt ``i`` are already in its slot's blocks (a matched prefix): only
        the rest is computed."""

    supports_slots: bool
    """Whether :meth:`decode` takes ``slots`` (several rows of one sequence: speculative verification)."""

    def decode(self, tokens: list[int], positions: list[int], slots: list[int] | None = None) -> torch.Tensor:
        """One step: token ``i`` sits at ``positions[i]`` of slot ``slots[i]`` (default: slot ``i``); rows of one
        slot must come in position order. Return (rows, vocab)."""

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Slot ``src``'s cached positions (the first ``length``) become slot ``dst``'s; ``dst``'s are freed."""

    def release(self, slot: int) -> None:
        """Forget slot ``slot``: its blocks go back to the pool."""

    def score_prompt(self, ids: list[int], slot: int | None = None) -> list[float]:
        """Log-probability of each prompt token given the ones before it (the first is NaN: nothing predicts it).
        Computed in slot ``slot`` (which must hold ``ids`` uncached-and-unshared, or nothing) or a scratch slot."""


def _token_logprobs(logits: torch.Tensor, targets: list[int]) -> list[float]:
    """log_softmax(logits)[i, targets[i]] for each row."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, torch.tensor(targets, device=logits.device)[:, None])[:, 0].tolist()


class Linear:
    """``y = x @ W.T + b`` through the native kernel (runtime.engine.native) where it is available, otherwise
    through oneDNN with the weight packed once (CPU, fp32), otherwise ``F.linear``.

    Why this order: the native kernel streams decode's few rows' weights faster than oneDNN's small-M kernels and,
    with its rows blocked for L2, keeps up with it on prefill's thousands; oneDNN with the weight packed once in turn
    runs decode's small products far faster than ``F.linear`` (MKL sgemm). ``ENDPOINTCTL_NATIVE_KERNELS=0`` runs
    the server without the first (``bench/README.md``). All three give a row the same bits whatever the other rows
    are (MKL and oneDNN from 2 rows up, see ROW_MULTIPLE; the native kernel by construction), and one runner always
    uses the same one, so greedy output does not depend on the batch.
    ``torch.ops.mkldnn`` is what torch's own inductor emits for CPU linears.

    ``dtype`` is the activations' (default: the weight's). The native kernels take the weight in its own dtype
    (fp32, bf16 or fp16) and compute in fp32; the packed copy (native or oneDNN) is then the only one this object
    keeps, so once the caller drops its tensor the weight is held once. Elsewhere the weight is used in
    ``dtype``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, rows_hint: int = 32,
                 kernels: native.NativeKernels | None = None, dtype: torch.dtype | None = None) -> None:
        dtype = dtype or weight.dtype
        self.out_features = weight.shape[0]
        self.kernels = kernels
        self.native_packed = kernels.pack_weight(weight) if kernels is not None else None
        # Copies, not views, on CPU: a view of a loaded parameter keeps the whole checkpoint's storage alive.
        on_cpu = weight.device.type == "cpu"
        self.weight = None if self.native_packed is not None else weight.to(dtype, copy=on_cpu)
        self.bias = None if bias is None else bias.to(dtype, copy=on_cpu)
        self.packed: torch.Tensor | None = None
        if self.weight is not None and _onednn_usable(self.weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, rows_hint)
            self.weight = None  # the packed copy replaces it: holding both held the weights twice

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.native_packed is not None and self.kernels is not None:
            return self.kernels.linear(x, self.native_packed, self.bias, self.out_features, torch.get_num_threads())
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _onednn_usable(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv: Linear
    o: Linear
    gate_up: Linear
    down: Linear


PREFILL_CHUNK_ROWS = 512
"""Prefill rows per native call (a multiple of ROW_MULTIPLE): bounds prefill's activations (see ``prefill``)."""

ROW_MULTIPLE = 4
"""Matrix products run on a multiple of this many rows. Both GEMM libraries pick another kernel (another summation
order) for a single row; MKL (the fallback) also for 5-7 and 9-11 rows with 2 threads, oneDNN for none other.
From 4 rows on, rounded to a multiple of 4, each row's result is the same whatever the other rows are. Padding
the batch there is what makes greedy output identical alone and inside a busy batch. It costs at most 3 dummy
rows, which a decode step at small batch (bound by reading the weights) hardly notices, and n-gram speculation
fills with draft rows (runtime.engine.speculation)."""


KV_BLOCK = 64
"""Decode attends over a key span rounded up to a multiple of this (and cache capacity is one too): the
reductions then see the same blocking whatever the batch's longest sequence is, which keeps greedy output
batch-invariant (see :meth:`LeanDecoderRunner.decode`)."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_rows(n: int) -> int:
    """Rows a product over ``n`` rows runs on (see ROW_MULTIPLE)."""
    return max(ROW_MULTIPLE, _round_up(n, ROW_MULTIPLE))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        # One fused op instead of six; bit-identical to the chain below in fp32, and row-invariant.
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
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
    """Batched Llama-style forward over HF weights with a paged KV cache."""

    supports_slots = True

    @torch.no_grad()  # copies of the parameters made here must not carry autograd graphs that keep the originals
    def __init__(self, model: torch.nn.Module, *, max_slots: int, max_total_tokens: int, use_native: bool = True,
                 num_blocks: int | None = None, prefix_caching: bool = True) -> None:
        config = model.config
        self.device = next(model.parameters()).device
        self.weight_dtype = next(model.parameters()).dtype
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.max_slots = max_slots
        self.max_len = max_total_tokens
        inner = model.model
        embed = inner.embed_tokens.weight
        self.hidden = embed.shape[1]
        self.ffn = inner.layers[0].mlp.down_proj.weight.shape[1]
        self.kernels = self._native_kernels() if use_native else None
        kernels = self.kernels
        # The activations' dtype, and the norms', RoPE tables' and KV cache's: fp32 on the native kernels whatever
        # the weights are (they widen 16-bit weights in registers), the weights' own dtype on PyTorch ops.
        self.dtype = torch.float32 if kernels is not None else self.weight_dtype

        on_cpu = self.device.type == "cpu"

        def own(t: torch.Tensor) -> torch.Tensor:
            # On CPU every tensor kept is the runner's own copy, so that nothing keeps the model's parameters alive
            # once it is dropped: the packed weights replace them, and a view of a loaded parameter would keep the
            # checkpoint's whole storage resident (the weights held twice).
            return t.to(self.dtype, copy=on_cpu)

        self.final_norm = own(inner.norm.weight)
        head = model.lm_head.weight
        self.lm_head = Linear(head, rows_hint=max_slots, kernels=kernels, dtype=self.dtype)
        self.vocab_size = self.lm_head.out_features
        if self.lm_head.native_packed is not None and head.data_ptr() == embed.data_ptr():
            # Tied embeddings: token rows are read out of the LM head's packed panels (see _embed), so the matrix
            # is held once.
            self.embed = None
        else:  # in the weights' dtype: converted row by row as tokens are looked up
            self.embed = embed.clone() if on_cpu else embed
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            self.layers.append(
                _Layer(
                    ln1=own(layer.input_layernorm.weight),
                    ln2=own(layer.post_attention_layernorm.weight),
                    qkv=Linear(
                        torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous(),
                        torch.cat(biases) if all(b is not None for b in biases) else None,
                        rows_hint=max_slots, kernels=kernels, dtype=self.dtype,
                    ),
                    o=Linear(attn.o_proj.weight, attn.o_proj.bias, rows_hint=max_slots, kernels=kernels,
                             dtype=self.dtype),
                    gate_up=Linear(
                        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(), rows_hint=max_slots,
                        kernels=kernels, dtype=self.dtype,
                    ),
                    down=Linear(mlp.down_proj.weight, rows_hint=max_slots, kernels=kernels, dtype=self.dtype),
                )
            )
        # RoPE tables for every position, computed by the model's own rotary module (covers rope scaling types).
        positions = torch.arange(self.max_len, device=self.device)[None]
        dummy = torch.zeros(1, device=self.device, dtype=self.dtype)
        cos, sin = inner.rotary_emb(dummy, positions)
        self.cos = cos[0].to(self.dtype).contiguous()
        sin = sin[0].to(self.dtype)
        half = self.head_dim // 2
        self.signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).contiguous()
        self.scratch_slot = pad_rows(self.max_slots)  # score_prompt's, past the slots decode reads
        self.prefix_caching = prefix_caching
        self.kv: PagedKVCache
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self._layer_table = None  # the native forward's pointers to weights and caches; rebuilt with the pool
        # Default: every slot at full length (what the tests' small limits want); the loader sizes it from memory.
        self.allocate_pool(num_blocks or (max_slots * -(-max_total_tokens // BLOCK_SIZE) + 1))

    def kv_bytes_per_token(self) -> int:
        """Keys and values of one position, every layer, in the cache's dtype."""
        return 2 * len(self.layers) * self.num_kv_heads * self.head_dim * self.dtype.itemsize

    def allocate_pool(self, num_blocks: int) -> None:
        """(Re)allocate the block pool: ``num_blocks`` blocks per layer (block 0 reserved), all slots empty.

        On the native kernels the pool is ``torch.empty``: attention reads only positions a sequence has written,
        so untouched pages are never read, and the operating system maps them only when first written (resident
        memory follows use). The PyTorch forward reads a padded span of every table, so its pool starts zeroed
        (masked keys must be finite)."""
        self.k_cache = self.v_cache = []  # drop the old pool before allocating the new one
        self._k_pool = self._v_pool = None
        self._layer_table = None
        shape = (len(self.layers), num_blocks, self.num_kv_heads, BLOCK_SIZE, self.head_dim)
        # The PyTorch forward on CPU zeroes each block as it is taken instead (a zeroed pool would be resident at
        # once); on CUDA the memory is the pool's from the start anyway.
        zero_on_take = self.kernels is None and self.device.type == "cpu"
        make = torch.empty if self.kernels is not None or zero_on_take else torch.zeros
        self._k_pool = make(shape, dtype=self.dtype, device=self.device)
        self._v_pool = make(shape, dtype=self.dtype, device=self.device)
        self.k_cache = list(self._k_pool.unbind(0))
        self.v_cache = list(self._v_pool.unbind(0))
        width = -(-_round_up(self.max_len, KV_BLOCK) // BLOCK_SIZE)
        self.kv = PagedKVCache(num_blocks=num_blocks, slots=self.scratch_slot + 1, max_blocks_per_seq=width,
                               prefix_caching=self.prefix_caching)
        self.kv.copy_block = self._copy_block
        if zero_on_take:
            self._zero_block(0)
            self.kv.zero_block = self._zero_block

    def _zero_block(self, block: int) -> None:
        for pool in (self._k_pool, self._v_pool):
            pool[:, block].zero_()

    def _copy_block(self, src: int, dst: int) -> None:
        for pool in (self._k_pool, self._v_pool):
            pool[:, dst] = pool[:, src]

    @property
    def kernels_name(self) -> str:
        """``native-avx512`` / ``native-avx2`` / ``native-generic`` (kernels.c; ``-bf16`` / ``-fp16`` appended
        for 16-bit weights) or ``torch`` (PyTorch ops), for /info and the logs."""
        if self.kernels is None:
            return "torch"
        weights = {torch.bfloat16: "-bf16", torch.float16: "-fp16"}.get(self.weight_dtype, "")
        return f"native-{self.kernels.isa}{weights}"

    def _native_kernels(self) -> native.NativeKernels | None:
        """The native kernels where they apply (CPU, fp32/bf16/fp16 weights, vector-friendly sizes) and can be
        built."""
        hidden = self.hidden
        if self.device.type != "cpu" or self.weight_dtype not in native.WEIGHT_TYPES or not native.enabled_by_env():
            return None
        # Every layer projection must fit the packed panels (16 output columns): hidden, heads and 2 * ffn.
        if self.head_dim % 16 or hidden % 16 or self.ffn % 8 or self.num_heads % self.num_kv_heads:
            log.info("native kernels skipped: head_dim %d, hidden %d, ffn %d", self.head_dim, hidden, self.ffn)
            return None
        try:
            return native.load()
        except native.NativeBuildError as exc:
            log.warning("native kernels unavailable, running on PyTorch ops: %s", exc)
            return None

    def _qkv(self, layer: _Layer, x: torch.Tensor):
        h = _rms_norm(x, layer.ln1, self.eps)
        qkv = layer.qkv(h)
        nqk = (self.num_heads + self.num_kv_heads) * self.head_dim
        return qkv[..., :nqk], qkv[..., nqk:]  # (queries and keys: both get RoPE), values

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = _rms_norm(x, layer.ln2, self.eps)
        gu = layer.gate_up(h)
        return layer.down(F.silu(gu[..., : self.ffn]) * gu[..., self.ffn :])

    @torch.inference_mode()
    def prefill(self, slots: list[int], prompts: list[list[int]], cached: list[int] | None = None) -> torch.Tensor:
        cached = cached or [0] * len(prompts)
        for slot, prompt in zip(slots, prompts, strict=True):
            self.kv.allocate(slot, len(prompt))
        if self.kernels is None:
            return self._prefill_torch(slots, prompts, cached)
        # Prompts packed back to back: token j of a prompt is a row at position j of its slot (from the first
        # position not already cached).
        tokens = [t for p, c in zip(prompts, cached, strict=True) for t in p[c:]]
        positions = [j for p, c in zip(prompts, cached, strict=True) for j in range(c, len(p))]
        row_slots = [slot for slot, p, c in zip(slots, prompts, cached, strict=True) for _ in range(c, len(p))]
        last = [end - 1 for end in itertools.accumulate(len(p) - c for p, c in zip(prompts, cached, strict=True))]
        # In chunks of rows: the activations are a few of (rows, hidden or 2 x ffn) floats per layer, tens of MB
        # per thousand rows, which a batch of long prompts would otherwise add to the weights and the pool at its
        # peak. A chunk's rows attend to the keys earlier chunks wrote into their blocks, exactly as the uncached
        # rest of a prompt attends to its cached prefix, and rows are independent of each other (ROW_MULTIPLE), so
        # the result is the same bits as one call.
        wanted: list[torch.Tensor] = []
        for start in range(0, len(tokens), PREFILL_CHUNK_ROWS):
            end = min(start + PREFILL_CHUNK_ROWS, len(tokens))
            h = self._forward_native(self.kernels, tokens[start:end], positions[start:end], row_slots[start:end])
            if keep := [i - start for i in last if start <= i < end]:  # prompts whose last row is in this chunk
                wanted.append(h[torch.tensor(keep)])
        n = len(prompts)
        h = torch.cat(wanted) if len(wanted) > 1 else wanted[0]
        if pad_rows(n) > n:
            h = torch.cat([h, h[-1:].expand(pad_rows(n) - n, -1)])
        return self.lm_head(h)[:n].float()

    @torch.inference_mode()
    def score_prompt(self, ids: list[int], slot: int | None = None) -> list[float]:
        """The prompt through this runner's own forward: logits of every position, in chunks of rows (a long
        prompt's full logits would be prompt x vocab floats at once). The HF model is not needed, so its weights
        need not stay alive beside the packed ones.

        In ``slot`` when given: the sequence's own unshared blocks, which already hold exactly these keys and
        values (the same forward wrote them), so nothing more is taken from the pool; otherwise in the scratch
        slot, whose blocks go back afterwards."""
        n = len(ids)
        scratch = slot is None
        slot = self.scratch_slot if scratch else slot
        self.kv.allocate(slot, n)
        try:
            if self.kernels is not None:
                h = self._forward_native(self.kernels, ids, list(range(n)), [slot] * n)
            else:
                x = self._hidden_torch([slot], [ids], [0])[:n]
                h = _rms_norm(torch.cat([x, x.new_zeros((pad_rows(n) - n, x.shape[1]))]), self.final_norm, self.eps)
        finally:
            if scratch:
                self.kv.free(slot)
        out = [float("nan")]
        for start in range(0, n - 1, 256):
            end = min(start + 256, n - 1)
            logits = self.lm_head(h[start:_round_up(end, ROW_MULTIPLE)])[: end - start]
            out += _token_logprobs(logits, ids[start + 1:end + 1])
        return out

    def _embed(self, ids: list[int]) -> torch.Tensor:
        """Token embeddings in the activations' dtype."""
        index = torch.tensor(ids, device=self.device)
        if self.embed is None:  # tied to the packed LM head: row t is column t % 16 of panel t // 16
            panels = self.lm_head.native_packed.view(-1, self.hidden, native.PANEL)
            return panels[index // native.PANEL, :, index % native.PANEL].to(self.dtype).contiguous()
        return F.embedding(index, self.embed).to(self.dtype)

    def _prefill_torch(self, slots: list[int], prompts: list[list[int]], cached: list[int]) -> torch.Tensor:
        n = len(prompts)
        lengths = [len(p) - c for p, c in zip(prompts, cached, strict=True)]
        x = self._hidden_torch(slots, prompts, cached)
        last = torch.tensor(list(itertools.accumulate(lengths)), device=self.device) - 1
        x = x[last]
        padded = pad_rows(n)
        if padded > n:
            x = torch.cat([x, x.new_zeros((padded - n, x.shape[1]))])
        x = _rms_norm(x, self.final_norm, self.eps)
        return self.lm_head(x)[:n].float()

    def _cache_rows(self, slots: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Where (slot, position) pairs' kv heads live in a layer's pool flattened to (blocks * kv heads * block,
        head_dim): shape (*positions.shape, kv heads)."""
        tables = self.kv.tables.to(self.device, non_blocking=True)
        blocks = tables[slots, positions // BLOCK_SIZE].long()
        heads = torch.arange(self.num_kv_heads, device=self.device)
        return (blocks[..., None] * self.num_kv_heads + heads) * BLOCK_SIZE + (positions % BLOCK_SIZE)[..., None]

    def _hidden_torch(self, slots: list[int], prompts: list[list[int]], cached: list[int]) -> torch.Tensor:
        """The decoder stack on PyTorch ops over prompts into their slots: the residual stream of every row
        (before the final norm), prompts' uncached tokens back to back, then padding rows.

        Prompts are packed back to back (no padding to the longest): the projections run on sum(lengths) rows,
        rounded up to ROW_MULTIPLE (row-invariant GEMMs, see there), and attention runs per sequence over exactly
        its own tokens, the same kernel call it gets when alone. A prompt whose first ``cached`` positions are in
        its blocks already (a shared prefix) computes only the rest, attending over the cached keys too."""
        lengths = [len(p) - c for p, c in zip(prompts, cached, strict=True)]
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length)
        total = starts[-1] + lengths[-1]
        rows = pad_rows(total)
        flat = [t for p, c in zip(prompts, cached, strict=True) for t in p[c:]] + [0] * (rows - total)
        ids = torch.tensor(flat, dtype=torch.long, device=self.device)
        pos = torch.cat([torch.arange(c, len(p)) for p, c in zip(prompts, cached, strict=True)]
                        + [torch.zeros(rows - total, dtype=torch.long)])
        pos = pos.to(self.device)
        row_slots = torch.tensor([s for s, n in zip(slots, lengths, strict=True) for _ in range(n)], device=self.device)
        write_rows = self._cache_rows(row_slots, pos[:total]).reshape(-1)
        # Keys and values of each prompt's whole length, read back from its blocks where part was cached.
        read_rows = [None if c == 0 else self._cache_rows(torch.full((len(p),), s, device=self.device),
                                                          torch.arange(len(p), device=self.device)).T.reshape(-1)
                     for s, p, c in zip(slots, prompts, cached, strict=True)]
        cos = self.cos[pos][:, None]  # (rows, 1, hd)
        sin = self.signed_sin[pos][:, None]
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        x = F.embedding(ids, self.embed)
        for li, layer in enumerate(self.layers):
            qk, v = self._qkv(layer, x)
            qk = _rope(qk.view(rows, nh + nkv, hd), cos, sin)
            v = v.view(rows, nkv, hd)
            attn = x.new_zeros((rows, nh * hd))
            kc, vc = self.k_cache[li].view(-1, hd), self.v_cache[li].view(-1, hd)
            kc.index_copy_(0, write_rows, qk[:total, nh:].reshape(-1, hd))
            vc.index_copy_(0, write_rows, v[:total].reshape(-1, hd))
            for start, length, cached_rows in zip(starts, lengths, read_rows, strict=True):
                end = start + length
                q = qk[start:end, :nh].transpose(0, 1)[None]
                if cached_rows is None:
                    k = qk[start:end, nh:].transpose(0, 1)  # (kv heads, length, hd)
                    vv = v[start:end].transpose(0, 1)
                    out = F.scaled_dot_product_attention(q, k[None], vv[None], is_causal=True, scale=self.scale,
                                                         enable_gqa=True)
                else:  # new rows at the end of a longer sequence: row i sees keys 0..cached + i
                    k = kc[cached_rows].view(nkv, -1, hd)
                    vv = vc[cached_rows].view(nkv, -1, hd)
                    full = k.shape[1]
                    mask = torch.ones((length, full), dtype=torch.bool, device=self.device).tril(full - length)
                    out = F.scaled_dot_product_attention(q, k[None], vv[None], attn_mask=mask, scale=self.scale,
                                                         enable_gqa=True)
                attn[start:end] = out[0].transpose(0, 1).reshape(length, nh * hd)
            x = x + layer.o(attn)
            x = x + self._mlp(layer, x)
        return x

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int], slots: list[int] | None = None) -> torch.Tensor:
        for slot, position in zip(slots if slots is not None else range(len(tokens)), positions, strict=True):
            self.kv.allocate(slot, position + 1)
        if self.kernels is not None:
            slots = slots if slots is not None else list(range(len(tokens)))
            h = self._forward_native(self.kernels, tokens, positions, slots)
            return self.lm_head(h)[: len(tokens)].float()
        return self._decode_torch(tokens, positions, slots)

    def _forward_native(self, kernels: native.NativeKernels, tokens: list[int], positions: list[int],
                        slots: list[int]) -> torch.Tensor:
        """Prefill and decode both, the whole decoder stack in one native call (kernels.c's ek_forward): norms
        fused with the residual add, RoPE + cache write + attention, SiLU gating, the packed products. Row ``i``
        is token ``i`` at ``positions[i]`` of slot ``slots[i]``; attention runs over each row's exact prefix, one
        thread per (row, kv head), so rows stay bit-independent of one another. The products run on
        ``pad_rows`` rows. Returns the final-normed hidden states (real rows first, then padding)."""
        b = len(tokens)
        rows = pad_rows(b)
        if self._layer_table is None:
            self._layer_table = native.layer_table([
                {"ln1": layer.ln1, "ln2": layer.ln2, "qkv": layer.qkv.native_packed, "qkv_bias": layer.qkv.bias,
                 "o": layer.o.native_packed, "o_bias": layer.o.bias, "gate_up": layer.gate_up.native_packed,
                 "down": layer.down.native_packed, "k_cache": self.k_cache[li], "v_cache": self.v_cache[li]}
                for li, layer in enumerate(self.layers)
            ])
        x = self._embed(tokens + [0] * (rows - b))
        return kernels.forward(
            self._layer_table, self.final_norm, x, b, torch.tensor(positions, dtype=torch.int32),
            torch.tensor(slots, dtype=torch.int32), self.cos, self.signed_sin, BLOCK_SIZE, self.num_heads,
            self.num_kv_heads, self.head_dim, self.ffn, self.eps, self.scale, torch.get_num_threads(),
            block_tables=self.kv.tables,
        )

    def _decode_torch(self, tokens: list[int], positions: list[int], slots: list[int] | None) -> torch.Tensor:
        b = len(tokens)
        rows_padded = pad_rows(b)
        filler = [0] * (rows_padded - b)  # dummy rows (token 0 at position 0): computed, never stored or used
        span = _round_up(max(positions) + 1, KV_BLOCK)
        ids = torch.tensor(tokens + filler, device=self.device)
        pos = torch.tensor(positions + filler, device=self.device)
        real_pos = pos[:b]
        if slots is None:  # row i is slot i (padding rows: spare slots, whose tables hold only the null block)
            slot_idx = torch.arange(rows_padded, device=self.device)
        else:  # several rows may share a slot: their keys/values are gathered after this step's writes
            slot_idx = torch.tensor(slots + filler, device=self.device)
        rows = slot_idx[:b]
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        # Where each real row's key/value heads go in a pool flattened to (blocks * kv heads * block, hd): one
        # index_copy_ per cache and layer; and where every row's span of keys is read from, through its table.
        cache_rows = self._cache_rows(rows, real_pos).reshape(-1)
        span_rows = self._cache_rows(slot_idx[:, None], torch.arange(span, device=self.device)[None])
        span_rows = span_rows.permute(0, 2, 1)  # (rows, kv heads, span)
        # Additive mask, built once per step: 0 up to each row's own position, -inf after (dummy rows see
        # position 0 of a spare slot or slot 0, so their softmax stays finite).
        future = torch.arange(span, device=self.device)[None] > pos[:, None]
        bias = torch.zeros((rows_padded, 1, 1, span), dtype=self.dtype, device=self.device)
        bias.masked_fill_(future[:, None, None], float("-inf"))
        cos = self.cos[pos][:, None]  # (B, 1, hd)
        sin = self.signed_sin[pos][:, None]
        x = F.embedding(ids, self.embed)
        for li, layer in enumerate(self.layers):
            qk, v = self._qkv(layer, x)
            qk = _rope(qk.view(rows_padded, nh + nkv, hd), cos, sin)
            kc, vc = self.k_cache[li].view(-1, hd), self.v_cache[li].view(-1, hd)
            kc.index_copy_(0, cache_rows, qk[:b, nh:].reshape(b * nkv, hd))
            vc.index_copy_(0, cache_rows, v[:b].reshape(b * nkv, hd))
            # Attention written out rather than SDPA: SDPA's CPU kernel sums in an order that depends on the
            # key length and on the batch (a row's output alone differs from the same row in a batch in the last
            # bits, which can flip a greedy token). Here every (row, kv head) is its own small GEMM with
            # a fixed reduction over head_dim, and the key span is a multiple of KV_BLOCK so the softmax and
            # the probability-weighted sum see the same blocking whatever the other rows' lengths; masked keys
            # add exact zeros. Grouped-query heads share their KV head without copying it.
            q = qk[:, :nh].reshape(rows_padded, nkv, nh // nkv, hd)
            keys, values = kc[span_rows], vc[span_rows]  # (B, kv, span, hd)
            scores = torch.matmul(q, keys.transpose(-1, -2))  # (B, kv, group, span)
            scores.mul_(self.scale).add_(bias)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(self.dtype)
            attn = torch.matmul(probs, values)  # (B, kv, group, hd)
            x = x + layer.o(attn.reshape(rows_padded, nh * hd))
            x = x + self._mlp(layer, x)
        x = _rms_norm(x, self.final_norm, self.eps)
        return self.lm_head(x)[:b].float()

    def move_slot(self, src: int, dst: int, length: int) -> None:
        self.kv.move(src, dst)

    def release(self, slot: int) -> None:
        self.kv.free(slot)


class HFFallbackRunner:
    """HF's own forward, one DynamicCache per sequence: any causal LM works, one sequence per forward."""

    supports_slots = False  # a DynamicCache cannot take back rejected draft tokens

    def __init__(self, model: torch.nn.Module, *, max_slots: int, max_total_tokens: int = 4096,
                 num_blocks: int | None = None) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.caches: list[object | None] = [None] * max_slots
        blocks_per_seq = -(-max_total_tokens // BLOCK_SIZE)
        # Bookkeeping only (HF's DynamicCache holds the tensors): the scheduler admits by it as on the lean runner.
        self.kv = PagedKVCache(num_blocks=num_blocks or max_slots * blocks_per_seq + 1, slots=max_slots,
                               max_blocks_per_seq=blocks_per_seq, prefix_caching=False)

    def kv_bytes_per_token(self) -> int:
        config = self.model.config
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        dtype = next(self.model.parameters()).dtype
        return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize

    def allocate_pool(self, num_blocks: int) -> None:
        self.kv = PagedKVCache(num_blocks=num_blocks, slots=len(self.caches),
                               max_blocks_per_seq=self.kv.tables.shape[1], prefix_caching=False)

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

    def prefill(self, slots: list[int], prompts: list[list[int]], cached: list[int] | None = None) -> torch.Tensor:
        if cached and any(cached):
            raise ValueError("HF's forward keeps no shared prefixes")
        for slot, prompt in zip(slots, prompts, strict=True):
            self.kv.allocate(slot, len(prompt))
        return torch.stack([self._forward(s, p, 0) for s, p in zip(slots, prompts, strict=True)])

    def decode(self, tokens: list[int], positions: list[int], slots: list[int] | None = None) -> torch.Tensor:
        if slots is not None:
            raise ValueError("HF's forward runs one row per sequence")
        for slot, position in enumerate(positions):
            self.kv.allocate(slot, position + 1)
        return torch.stack([self._forward(i, [t], p) for i, (t, p) in enumerate(zip(tokens, positions, strict=True))])

    def move_slot(self, src: int, dst: int, length: int) -> None:
        self.caches[dst] = self.caches[src]
        self.caches[src] = None
        self.kv.move(src, dst)

    def release(self, slot: int) -> None:
        self.caches[slot] = None
        self.kv.free(slot)

    @torch.inference_mode()
    def score_prompt(self, ids: list[int], slot: int | None = None) -> list[float]:
        logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]
        return [float("nan"), *_token_logprobs(logits[:-1], ids[1:])]


def release_freed_memory() -> None:
    """Collect garbage, then hand the allocator's free pages back to the system (glibc's ``malloc_trim``): freed
    weights (e.g. HF's parameters, once a runner has packed its own copy) otherwise stay in the process's resident
    memory, in heap arenas that only shrink from the top."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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


def make_runner(model: torch.nn.Module, *, max_slots: int, max_total_tokens: int, force_hf: bool = False,
                num_blocks: int | None = None, prefix_caching: bool = True) -> ModelRunner:
    """The lean runner when the architecture allows it, HF's forward otherwise. ``num_blocks``: the KV pool's
    first size (default: every slot at full length); the loader resizes it from memory after warming up."""
    reason = "forced" if force_hf else lean_unsupported_reason(model, max_total_tokens=max_total_tokens)
    if reason is None:
        log.info("using the lean batched forward (%s)", model.config.model_type)
        return LeanDecoderRunner(model, max_slots=max_slots, max_total_tokens=max_total_tokens,
                                 num_blocks=num_blocks, prefix_caching=prefix_caching)
    log.info("using HF's forward with per-sequence DynamicCache (%s)", reason)
    return HFFallbackRunner(model, max_slots=max_slots, max_total_tokens=max_total_tokens, num_blocks=num_blocks)
