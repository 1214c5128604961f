"""bench/machine.py's cost model, checked against the parameters a real model holds (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from machine import ceilings, model_costs, workload_flops  # noqa: E402


def test_costs_match_the_model_weights_and_the_ceilings_follow():
    config = LlamaConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                         intermediate_size=1024, vocab_size=8192, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    matrices = sum(p.numel() for name, p in model.model.layers.named_parameters() if p.dim() == 2)
    costs = model_costs(config)
    assert costs["layer_params"] == matrices
    assert costs["lm_head_params"] == model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 1e6 - 15.7) < 0.05  # the shape the issue documents

    # One prompt token and one new token: prefill projections + LM head, no decode step.
    assert workload_flops(costs, [1], 1) == 2 * costs["layer_params"] + 2 * costs["lm_head_params"] + 6 * 2 * 384
    flops = workload_flops(costs, [72] * 64, 64)
    assert 185e9 < flops < 200e9  # ~19 MFLOP per prompt token, ~25 per generated token, plus attention
    limits = ceilings({"fp32_gemm_gflops": 100.0, "memory_gb_per_s": 20.0}, costs, [72] * 64, 64)
    assert limits["compute_ceiling_tokens_per_s"] == round(100e9 / (flops / 4096))
    weights = (costs["layer_params"] + costs["lm_head_params"]) * torch.finfo(torch.float32).bits // 8
    assert limits["memory_ceiling_single_stream_tokens_per_s"] == round(20e9 / weights)
