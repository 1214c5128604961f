"""What this machine can do at all for the benchmark's model, measured in the same run as the benchmark.

The throughput goals are absolute numbers taken on another machine of the same kind; shared machines differ by
2-3x from day to day (the naive server has measured 65-190 tok/s on them). So the benchmark also measures the two
limits that bound any fp32 implementation here, and the work its own workload takes:

* ``fp32_gemm_gflops``: a large fp32 matrix product on all cores (the issue's "2-core fp32 matmul peak");
* ``memory_gb_per_s``: reading a buffer far larger than the caches (what a decode step at batch 1 is bound by:
  it reads every weight once);
* the workload's FLOPs (prefill of every prompt token + decode of every generated token, projections and
  attention), hence ``compute_ceiling_tokens_per_s`` = peak / FLOPs per output token, and the single-stream
  ceiling without speculation, ``memory_ceiling_single_stream_tokens_per_s`` = bandwidth / weight bytes per step.

Run as a script it prints the machine figures for the benchmark's model as JSON.
"""

from __future__ import annotations

import json
import time


def _best_of(fn, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Seconds per call, the best of ``repeats`` timed batches (the least disturbed by other tenants)."""
    fn()
    calls = 1
    while True:  # batch size so that one timed batch lasts at least min_seconds
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - started >= min_seconds:
            break
        calls *= 2
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return min(times)


def measure_machine() -> dict:
    import torch

    a, b = torch.randn(2048, 384), torch.randn(384, 2048)
    gemm = 2 * 2048 * 384 * 2048 / _best_of(lambda: a @ b) / 1e9
    big = torch.randn(64 * 1024 * 1024)  # 256 MB, far beyond any cache here
    bandwidth = big.numel() * 4 / _best_of(big.sum, repeats=3) / 1e9
    return {"threads": torch.get_num_threads(), "fp32_gemm_gflops": round(gemm, 1),
            "memory_gb_per_s": round(bandwidth, 1)}


def model_costs(config) -> dict:
    """FLOPs and weight bytes of a Llama-style decoder, per token (attention over ``context`` positions aside)."""
    hidden, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_layer = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * ffn
    lm_head = hidden * config.vocab_size
    return {"layer_params": per_layer * layers, "lm_head_params": lm_head, "layers": layers,
            "attention_width": heads * head_dim}


def workload_flops(costs: dict, prompt_lengths: list[int], new_tokens: int) -> float:
    """Prefill every prompt (logits of its last position only) and decode ``new_tokens`` per request."""
    layer, head, layers, width = (costs["layer_params"], costs["lm_head_params"], costs["layers"],
                                  costs["attention_width"])
    total = 0.0
    for length in prompt_lengths:
        total += 2 * layer * length + 2 * head  # projections for every prompt token, LM head once
        total += layers * 2 * width * length * length  # causal attention: QK^T and PV over half a square each
        for step in range(new_tokens - 1):  # the first new token comes from the prefill
            context = length + step + 1
            total += 2 * (layer + head) + layers * 4 * width * context
    return total


def ceilings(machine: dict, costs: dict, prompt_lengths: list[int], new_tokens: int, *, dtype_bytes: int = 4) -> dict:
    flops = workload_flops(costs, prompt_lengths, new_tokens)
    output_tokens = len(prompt_lengths) * new_tokens
    step_bytes = (costs["layer_params"] + costs["lm_head_params"]) * dtype_bytes
    return {
        "workload_gflop": round(flops / 1e9, 1),
        "compute_ceiling_tokens_per_s": round(machine["fp32_gemm_gflops"] * 1e9 / (flops / output_tokens)),
        "memory_ceiling_single_stream_tokens_per_s": round(machine["memory_gb_per_s"] * 1e9 / step_bytes),
    }


if __name__ == "__main__":
    from transformers import AutoConfig

    from runtime.tinymodel import cached_tiny_model

    config = AutoConfig.from_pretrained(cached_tiny_model())
    machine = measure_machine()
    costs = model_costs(config)
    lengths = [72] * 64  # the benchmark's 64 prompts are 64-80 tokens
    print(json.dumps({**machine, **ceilings(machine, costs, lengths, 64),
                      "layer_params_m": round(costs["layer_params"] / 1e6, 2)}, indent=2))
