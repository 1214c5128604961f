"""bench/chat_workload.py's pure parts: the request set, its rendering with the chat template, and the goals the
real-model benchmark judges ours against llama-server by (no server, no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chat_workload import conversations, ratios_and_goals, render, requests  # noqa: E402


def test_the_set_is_distinct_chat_and_fills_a_run_without_repeating():
    pool = conversations()
    assert len(pool) >= 64  # a 64-request run never sends the same conversation twice (no prompt-cache gain)
    assert len({repr(c) for c in pool}) == len(pool)
    roles = {tuple(m["role"] for m in c) for c in pool}
    assert {("user",), ("system", "user"), ("user", "assistant", "user")} <= roles
    text = " ".join(m["content"] for c in pool for m in c)
    for code in ("def ", "import ", "return ", "{", ";\n"):
        assert code not in text
    assert conversations() == pool  # fixed order
    assert requests(3) == pool[:3]
    assert requests(len(pool) + 2)[-2:] == pool[:2]


def test_render_is_apply_chat_template_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chats = requests(5)
    ids = render(tokenizer, chats)
    for chat, got in zip(chats, ids, strict=True):
        want = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert tokenizer.decode(got) == want
        assert all(isinstance(i, int) for i in got)


@pytest.mark.realmodel
def test_rendered_for_smollm2_they_are_short_chat_prompts(real_model_tokenizer):
    lengths = [len(p) for p in render(real_model_tokenizer, conversations())]
    assert 20 <= min(lengths) and max(lengths) <= 200  # "a few hundred tokens at most"; the docstring says 28-116


def _server(fixed: float, single: float, natural: float, ttft_p99: float) -> dict:
    return {"fixed": {"tokens_per_s": fixed, "ttft_p99_s": ttft_p99}, "single_stream": {"tokens_per_s": single},
            "natural": {"tokens_per_s": natural}}


def test_goals_hold_each_dtype_against_llama_server_of_the_same_precision_and_f16():
    servers = {
        "ours_float32": _server(260, 36, 284, 2.0),
        "llama_server_f32": _server(200, 40, 140, 2.5),
        "ours_bfloat16": _server(390, 80, 300, 1.0),
        "llama_server_f16": _server(300, 76, 195, 0.9),
        "llama_server_q4_1": _server(500, 120, 300, 0.5),  # shown, never a goal's peer
        "naive": {"error": "not started"},
        "ours_float16": {"error": "server exited with 1"},
    }
    ratios, goals = ratios_and_goals(servers)
    assert ratios["32_clients>=1.3x_llama_same_precision"] == {"float32": 1.3, "bfloat16": 1.3, "float16": None}
    assert goals["32_clients>=1.3x_llama_same_precision"] == {"float32": True, "bfloat16": True, "float16": None}
    assert goals["single_stream>=1.0x_llama_f16"] == {"float32": False, "bfloat16": True, "float16": None}
    assert ratios["natural_length>=1.5x_llama_f16"]["float32"] == 1.46
    assert goals["natural_length>=1.5x_llama_f16"] == {"float32": False, "bfloat16": True, "float16": None}
    # TTFT: lower is better, against the same precision (fp32 2.0 vs 2.5; bf16 1.0 vs 0.9).
    assert goals["ttft_p99_32_clients<=llama_same_precision"] == {"float32": True, "bfloat16": False,
                                                                   "float16": None}

    _, without_llama = ratios_and_goals({"ours_float32": _server(260, 36, 284, 2.0)})
    assert all(value is None for goal in without_llama.values() for value in goal.values())
