"""How much memory a model needs to serve a context and a concurrency, and the smallest instance that holds it.

Pure arithmetic over a repository's `config.json` and the hardware catalog (no I/O), so every number the answer
shows can be checked by hand and by a test:

    parameters   embeddings (vocab × hidden) + an untied LM head + layers × (attention + MLP + norms)
                 attention = hidden × (heads + 2 × kv_heads) × head_dim + heads × head_dim × hidden
                             (+ (heads + 2 × kv_heads) × head_dim with Q/K/V biases: Qwen2, attention_bias)
                 MLP       = (3 if gated else 2) × hidden × intermediate
                             (× experts, + hidden × experts for the router, for a mixture of experts)
                 Biases elsewhere and learned position embeddings (GPT-2, BERT) are left out: under 1%.
    weights      parameters × bytes per parameter (the config's dtype, or a quantization's bits / 8)
    KV per token 2 (K and V) × layers × kv_heads × head_dim × bytes per element
    KV           KV per token × context × concurrency
    overhead     10% of (weights + KV) + 1 GiB: activations, the CUDA context or the CPU process baseline
    needed       weights + KV + overhead

An instance holds it when `needed` ≤ 90% of its memory (GPU memory, all GPUs together, for a GPU instance; RAM for a
CPU one) — vLLM's default `gpu_memory_utilization`, and room for the OS on a CPU. The smallest is the cheapest, then
the one with the least memory, then the first in the catalog. Figures are in GiB (2^30 bytes), as the catalog's `memoryGb` is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common.catalog import Instance
from common.errors import InvalidSpec

GIB = 1024**3
USABLE_FRACTION = 0.9
OVERHEAD_FRACTION = 0.10
OVERHEAD_FIXED = 1 * GIB
MAX_FIELD = 10**9  # no real dimension is larger; it keeps every product a finite float

DTYPE_BYTES = {"float32": 4.0, "float": 4.0, "float16": 2.0, "half": 2.0, "bfloat16": 2.0, "float8_e4m3fn": 1.0,
               "float8_e5m2": 1.0, "int8": 1.0, "uint8": 1.0}
# Decoder families whose MLP is gated (gate, up, down) and whose word embeddings are not tied by default.
GATED_MLP = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
             "phi3", "olmo", "olmo2", "granite", "starcoder2_gated", "deepseek_v2", "cohere", "internlm2", "smollm3"}
UNTIED_BY_DEFAULT = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo",
                     "olmo2", "granite", "deepseek_v2", "internlm2"}
# Other spellings of the same fields (GPT-2, T5, OPT, Falcon ...).
ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                                "max_sequence_length"),
}


def _field(config: dict[str, Any], name: str) -> Any:
    for key in ALIASES.get(name, (name,)):
        value = config.get(key)
        if value is not None:
            return value
    return None


def _positive_int(config: dict[str, Any], name: str, default: int | None = None) -> int:
    value = _field(config, name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_FIELD:
        shown = "missing" if value is None else f"{value!r}"[:40]
        raise InvalidSpec(f"config.json: {name} must be an integer from 1 to {MAX_FIELD:,} ({shown}); cannot size "
                          "this model", param="repository")
    return value


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs from `config.json`."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: int
    gated: bool
    qkv_bias: bool
    lm_head: bool  # an untied output projection of its own
    dtype: str
    dtype_bytes: float
    max_context: int | None

    @classmethod
    def from_config(cls, config: Any, *, dtype: str | None = None) -> ModelShape:
        """Parse a `config.json`; a multimodal config is sized by its text model (`text_config`)."""
        if not isinstance(config, dict):
            raise InvalidSpec("config.json is not a JSON object", param="repository")
        text = config.get("text_config")
        if isinstance(text, dict) and _field(config, "hidden_size") is None:
            config = {**text, "torch_dtype": config.get("torch_dtype") or text.get("torch_dtype")}
        model_type = str(config.get("model_type") or "unknown")[:64]
        hidden = _positive_int(config, "hidden_size")
        layers = _positive_int(config, "num_hidden_layers")
        heads = _positive_int(config, "num_attention_heads")
        kv_heads = _positive_int(config, "num_key_value_heads", default=heads)
        head_dim = _positive_int(config, "head_dim", default=max(1, hidden // heads))
        # A mixture of experts sizes each expert's MLP by moe_intermediate_size when it has one; GPT-2's n_inner
        # may be null (4 × hidden).
        intermediate = _positive_int(config, "intermediate_size", default=4 * hidden)
        intermediate = _positive_int(config, "moe_intermediate_size", default=intermediate)
        vocab = _positive_int(config, "vocab_size")
        experts = _positive_int(config, "num_local_experts", default=_positive_int(config, "num_experts", default=1))
        listed = config.get("architectures")
        architectures = [a for a in listed if isinstance(a, str)] if isinstance(listed, list) else []
        generates = any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in architectures)
        tied = config.get("tie_word_embeddings", model_type not in UNTIED_BY_DEFAULT)
        max_context = _field(config, "max_position_embeddings")
        name, size = _dtype(config, dtype)
        return cls(model_type=model_type, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                   head_dim=head_dim, intermediate=intermediate, vocab=vocab, experts=experts,
                   gated=model_type in GATED_MLP or (config.get("hidden_act") in ("silu", "swiglu")
                                                     and "intermediate_size" in config),
                   qkv_bias=bool(config.get("attention_bias")) or model_type == "qwen2",
                   lm_head=generates and not tied, dtype=name, dtype_bytes=size,
                   max_context=max_context if isinstance(max_context, int) and 0 < max_context <= MAX_FIELD
                   else None)

    @property
    def parameters(self) -> int:
        attention = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        if self.qkv_bias:
            attention += (self.heads + 2 * self.kv_heads) * self.head_dim
        mlp = (3 if self.gated else 2) * self.hidden * self.intermediate * self.experts
        if self.experts > 1:
            mlp += self.hidden * self.experts
        per_layer = attention + mlp + 2 * self.hidden
        embeddings = self.vocab * self.hidden
        return embeddings + (embeddings if self.lm_head else 0) + self.layers * per_layer + self.hidden

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


def _dtype(config: dict[str, Any], override: str | None) -> tuple[str, float]:
    """The serving dtype: the override, else a quantization's bits, else the config's dtype (float32 when unsaid,
    transformers' default)."""
    if override is not None:
        if override not in DTYPE_BYTES:
            raise InvalidSpec(f"unknown dtype {override[:32]!r}; one of: {', '.join(sorted(DTYPE_BYTES))}",
                              param="dtype")
        return override, DTYPE_BYTES[override]
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        bits = quant.get("bits") or quant.get("weight_bits")
        if isinstance(bits, int) and 1 <= bits <= 16:
            return f"{quant.get('quant_method', 'quantized')} {bits}-bit"[:48], bits / 8
    name = config.get("torch_dtype") or config.get("dtype") or "float32"
    name = str(name).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise InvalidSpec(f"config.json: unknown torch_dtype {name[:32]!r}; pass dtype= to size it",
                          param="dtype")
    return name, DTYPE_BYTES[name]


@dataclass(frozen=True)
class Need:
    weights: float
    kv: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.kv + self.overhead


def need(shape: ModelShape, *, context: int, concurrency: int) -> Need:
    weights = shape.parameters * shape.dtype_bytes
    kv = shape.kv_bytes_per_token * context * concurrency
    return Need(weights=weights, kv=kv, overhead=OVERHEAD_FRACTION * (weights + kv) + OVERHEAD_FIXED)


def capacity_bytes(inst: Instance) -> float | None:
    """What the model's memory is checked against: GPU memory (all GPUs) on a GPU instance, RAM on a CPU one;
    None when the catalog does not say (a local GPU entry)."""
    gb = inst.gpuMemoryGb if inst.accelerator != "cpu" else inst.memoryGb
    return gb * GIB if gb else None


@dataclass(frozen=True)
class Candidate:
    vendor: str
    region: str
    instance: Instance


def smallest(candidates: Iterable[Candidate], needed: float) -> Candidate | None:
    fits = [c for c in candidates
            if (cap := capacity_bytes(c.instance)) is not None and needed <= cap * USABLE_FRACTION]
    # `min` keeps the first of equals: on a tie the catalog's own order (its first region) wins.
    return min(fits, key=lambda c: (c.instance.pricePerHour, capacity_bytes(c.instance) or 0.0), default=None)


def gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def arithmetic(shape: ModelShape, memory: Need, *, context: int, concurrency: int,
               chosen: Candidate | None, largest: Candidate | None) -> list[str]:
    """The lines a person checks the answer with, in the order the module docstring gives the rules."""
    kind = f"{'gated ' if shape.gated else ''}MLP{f' × {shape.experts} experts' if shape.experts > 1 else ''}"
    lines = [
        f"model: {shape.model_type}, hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads "
        f"({shape.kv_heads} KV heads × head_dim {shape.head_dim}), intermediate {shape.intermediate} ({kind}), "
        f"vocab {shape.vocab}, {'untied LM head' if shape.lm_head else 'no separate LM head'}",
        f"parameters: {shape.parameters:,} ≈ {shape.parameters / 1e9:.3f} B",
        f"weights: {shape.parameters:,} × {shape.dtype_bytes:g} B ({shape.dtype}) = {gib(memory.weights)}",
        f"KV cache per token: 2 × {shape.layers} layers × {shape.kv_heads} KV heads × {shape.head_dim} head_dim × "
        f"{shape.dtype_bytes:g} B = {shape.kv_bytes_per_token:,.0f} B",
        f"KV cache: {shape.kv_bytes_per_token:,.0f} B × {context:,} tokens × {concurrency} concurrent = "
        f"{gib(memory.kv)}",
        f"overhead: {OVERHEAD_FRACTION:.0%} × ({gib(memory.weights)} + {gib(memory.kv)}) + 1 GiB = "
        f"{gib(memory.overhead)}",
        f"needed: {gib(memory.weights)} + {gib(memory.kv)} + {gib(memory.overhead)} = {gib(memory.total)}",
    ]
    if chosen is not None:
        inst = chosen.instance
        cap = capacity_bytes(inst) or 0.0
        what = "GPU memory" if inst.accelerator != "cpu" else "memory"
        lines.append(f"smallest instance: {chosen.vendor}/{chosen.region} {inst.instanceType} {inst.instanceSize} "
                     f"({inst.id}): {USABLE_FRACTION:.0%} of {gib(cap)} {what} = {gib(cap * USABLE_FRACTION)} ≥ "
                     f"{gib(memory.total)}, ${inst.pricePerHour:g}/h")
    elif largest is not None:
        cap = capacity_bytes(largest.instance) or 0.0
        lines.append(f"no instance holds {gib(memory.total)}: the largest, {largest.instance.id}, offers "
                     f"{USABLE_FRACTION:.0%} of {gib(cap)} = {gib(cap * USABLE_FRACTION)}")
    else:
        lines.append("no instance of the hardware catalog can be checked (none available with known memory)")
    return lines
