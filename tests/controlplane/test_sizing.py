"""The recommended configuration's arithmetic against published parameter counts, and the instance choice."""

from __future__ import annotations

import pytest

from common.catalog import load_catalog
from common.errors import InvalidSpec
from controlplane.services import sizing

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu"}


@pytest.mark.parametrize(("config", "parameters"), [
    # HuggingFaceTB/SmolLM2-135M-Instruct (tied embeddings)
    ({**LLAMA, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
      "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}, 134_515_008),
    # meta-llama/Llama-3.1-8B-Instruct
    ({**LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}, 8_030_261_248),
    # Qwen/Qwen2.5-7B-Instruct (Q/K/V biases)
    ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
      "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
      "tie_word_embeddings": False}, 7_615_616_512),
    # mistralai/Mixtral-8x7B-Instruct-v0.1 (8 experts and their router; untied by default)
    ({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "vocab_size": 32000, "num_local_experts": 8}, 46_702_792_704),
])
def test_parameter_counts_match_the_published_ones(config: dict, parameters: int) -> None:
    assert sizing.ModelShape.from_config({**config, "torch_dtype": "bfloat16"}).parameters == parameters


def test_gpt2_names_and_ungated_mlp_within_one_percent() -> None:
    shape = sizing.ModelShape.from_config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768,
                                           "n_layer": 12, "n_head": 12, "n_inner": None, "vocab_size": 50257,
                                           "n_positions": 1024})
    assert not shape.gated and not shape.lm_head and shape.dtype == "float32" and shape.max_context == 1024
    assert abs(shape.parameters - 124_439_808) / 124_439_808 < 0.01  # position embeddings and biases left out


def test_quantized_weights_and_dtype_override() -> None:
    config = {**LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "float16",
              "quantization_config": {"quant_method": "awq", "bits": 4}}
    assert sizing.ModelShape.from_config(config).dtype_bytes == 0.5
    assert sizing.ModelShape.from_config(config, dtype="float32").dtype_bytes == 4
    with pytest.raises(InvalidSpec, match="unknown dtype"):
        sizing.ModelShape.from_config(config, dtype="float128")


def test_the_cheapest_instance_that_holds_it_then_the_smallest() -> None:
    catalog = load_catalog(None)
    candidates = [sizing.Candidate("aws", "us-east-1", inst) for inst in catalog.vendors[0].regions[0].computes]
    # 20 GiB: an L4 (24 GiB × 0.9 = 21.6, $0.8/h) beats an A10G (same memory, $1/h) and a T4 x2 (32 GiB, $1/h).
    assert sizing.smallest(candidates, 20 * sizing.GIB).instance.id == "aws-us-east-1-nvidia-l4-x1"
    assert sizing.smallest(candidates, 3 * sizing.GIB).instance.id == "aws-us-east-1-intel-icl-x2"
    assert sizing.smallest(candidates, 600 * sizing.GIB) is None
