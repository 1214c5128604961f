"""Resident memory of a loaded runtime: the weights once, the KV pool, and a small constant, on both forwards.

Measured in a fresh process (``/proc/self/status``): resident memory after the imports and the tokenizer is the
baseline, then the real model is loaded the way the server loads it (runtime.engine.loader) with a pool of
MAX_BATCH_TOTAL_TOKENS positions, and every block of the pool is written by prefilling prompts into it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

import torch, transformers  # noqa: F401 - the baseline includes the libraries every server imports
from transformers import AutoTokenizer
from safetensors import safe_open
from runtime.config import RuntimeSettings
from runtime.engine.loader import load_model
from runtime.engine.model import release_freed_memory

model_dir, pool_tokens = sys.argv[1], int(sys.argv[2])
weights = 0
with safe_open(f"{model_dir}/model.safetensors", "pt") as f:
    for name in f.keys():
        shape = f.get_slice(name).get_shape()
        n = 1
        for d in shape:
            n *= d
        weights += n * 4  # loaded in float32 on CPU
AutoTokenizer.from_pretrained(model_dir)  # the tokenizer (and the imports it pulls in) is the same in every server
base = status("VmRSS")
loaded = load_model(RuntimeSettings(model_id=model_dir, max_total_tokens=2048, max_input_tokens=2000,
                                    max_batch_size=8, max_batch_total_tokens=pool_tokens, speculate=0))
runner = loaded.engine.runner
kv = runner.kv
release_freed_memory()
with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here on: serving, not loading (which packs a copy)
    f.write("5")
# Write every block of the pool: prompts of 1,000 tokens into slots until no block is left.
slot = 0
while kv.available() * kv.block_size >= 1000 and slot < 8:
    runner.prefill([slot], [[(7 * slot + i) % 5000 + 10 for i in range(1000)]])
    slot += 1
release_freed_memory()
print(json.dumps({"base": base, "rss": status("VmRSS"), "peak": status("VmHWM"), "weights": weights,
                  "pool": kv.num_blocks * kv.block_size * runner.kv_bytes_per_token(),
                  "written_blocks": kv.used, "blocks": kv.num_blocks - 1, "kernels": loaded.kernels}))
"""


def _measure(model_dir: Path, *, pool_tokens: int, native: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ENDPOINTCTL_NATIVE_KERNELS": "1" if native else "0"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(model_dir), str(pool_tokens)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=str(REPO_ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SMALL_CONSTANT = 160 * 2**20
"""Beyond weights and pool after the imports: the tokenizer, RoPE tables, a prefill's activations, allocator
slack."""


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_resident_memory_is_weights_plus_pool_plus_a_small_constant(real_model_dir, native):
    m = _measure(real_model_dir, pool_tokens=8000, native=native)
    assert m["written_blocks"] >= m["blocks"] - 1000 // 16  # the pool really was written (resident)
    assert m["kernels"].startswith("native") == native
    grown = m["rss"] - m["base"]
    assert grown <= m["weights"] + m["pool"] + SMALL_CONSTANT, m
    assert m["peak"] - m["base"] <= 1.1 * (m["weights"] + m["pool"]) + SMALL_CONSTANT, m  # peak while serving
