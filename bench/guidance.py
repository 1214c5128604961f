"""Cost of guided generation: throughput of a batch where half the requests carry a JSON-schema grammar, against
the same batch with none, same server, same run; and grammar compile time, cold and cached.

Workload (over HTTP, the tiny model: Llama, hidden 384, 6 layers, vocab 8192, fp32): 32 concurrent
``/v1/completions`` requests, greedy, 64 new tokens each. In the guided batch 16 of them carry
``response_format: json_schema`` with a schema whose shortest valid answer is longer than 64 tokens (an array of
exactly 64 digits), so every request, guided or free, generates exactly 64 tokens (free ones with
``ignore_eos``) and the two batches have the same shape: the difference is the per-step mask work alone
(computing 16 masks and applying them to the logits). Rounds alternate baseline / guided; medians are reported.

Compile times are measured in process on the same tokenizer, over assorted schemas (cold: a fresh compiler;
cached: the same spec again, an LRU hit), plus the tool-call grammar of two functions. Also in process: the
engine's own sampling step (``runtime.engine.sampling.BatchSampler``) on a (32, 8192) logits batch, all rows
free versus 16 rows constrained, and the part of it that is mask computation (one batched xgrammar call) — the
per-step work guidance adds, without the noise of HTTP and of a shared machine.

Prints one JSON object. Usage: ``python bench/guidance.py [--rounds 3] [--batch 32] [--tokens 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GUIDED_SCHEMA = {
    "type": "object",
    "properties": {"digits": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 64, "maxItems": 64}},
    "required": ["digits"],
}

COMPILE_SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 130}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 5}, "ok": {"type": "boolean"}}, "required": ["tags", "ok"]},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-F0-9]{8}$"}, "roles": {"type": "array", "items": {"type": "string"}}}, "required": ["id"]}, "score": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["user", "score"]},
    GUIDED_SCHEMA,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_dir() -> Path:
    from runtime import tinymodel

    cached = getattr(tinymodel, "cached_tiny_model", None)
    if cached is not None:
        return Path(cached())
    return tinymodel.build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-guidance-")) / "tiny")


@contextlib.contextmanager
def _server(model_dir: Path, *, timeout: float = 300):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MODEL_ID": str(model_dir), "PORT": str(port), "HOSTNAME": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "runtime"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"runtime exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("runtime did not become healthy")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _batch(url: str, *, batch: int, guided: int, tokens: int) -> dict:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, bool]:
        body = {"prompt": f"Request {i}: list the digits you like", "max_tokens": tokens, "temperature": 0}
        if i < guided:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "digits", "schema": GUIDED_SCHEMA}}
        else:
            body["ignore_eos"] = True
        r = await client.post(f"{url}/v1/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return data["usage"]["completion_tokens"], data["choices"][0]["text"], i < guided

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=batch + 4)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, i) for i in range(batch)))
        elapsed = time.perf_counter() - start
    generated = sum(r[0] for r in results)
    # The guided prefixes must be on track to the schema (valid JSON prefix of the digits array).
    for _n, text, is_guided in results:
        if is_guided:
            assert text.startswith('{"digits": ['), text[:40]
    return {"tokens": generated, "seconds": elapsed, "tokens_per_s": generated / elapsed}


def _compile_times() -> dict:
    from transformers import AutoTokenizer

    from runtime.guidance import GrammarCompiler, plan_tools
    from runtime.guidance.specs import json_schema_spec

    tokenizer = AutoTokenizer.from_pretrained(_model_dir())
    cold, cached = [], []
    for schema in COMPILE_SCHEMAS:
        compiler = GrammarCompiler(tokenizer)
        spec = json_schema_spec(schema, param="bench")
        t0 = time.perf_counter()
        compiler.compile(spec)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compiler.compile(json_schema_spec(json.loads(json.dumps(schema)), param="bench"))
        cached.append(time.perf_counter() - t0)
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": COMPILE_SCHEMAS[0]}},
        {"type": "function", "function": {"name": "search", "parameters": COMPILE_SCHEMAS[2]}},
    ]
    compiler = GrammarCompiler(tokenizer)
    t0 = time.perf_counter()
    compiler.compile(plan_tools(tools, "auto").grammar_spec())
    tools_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiler.compile(plan_tools(tools, "auto").grammar_spec())
    tools_cached = time.perf_counter() - t0
    return {
        "json_schema_cold_ms_median": round(statistics.median(cold) * 1e3, 2),
        "json_schema_cold_ms_max": round(max(cold) * 1e3, 2),
        "json_schema_cached_ms_median": round(statistics.median(cached) * 1e3, 4),
        "tool_grammar_cold_ms": round(tools_cold * 1e3, 2),
        "tool_grammar_cached_ms": round(tools_cached * 1e3, 4),
        "schemas": len(COMPILE_SCHEMAS),
    }


def _sampling_step_costs(batch: int, guided: int) -> dict:
    from dataclasses import dataclass, field

    import torch
    from transformers import AutoTokenizer

    from runtime.engine.params import SamplingParams
    from runtime.engine.sampling import BatchSampler
    from runtime.guidance import GrammarCompiler, fill_bitmasks
    from runtime.guidance.specs import json_schema_spec

    @dataclass
    class Row:  # what the sampler reads from a running sequence
        params: SamplingParams
        constraint: object = None
        generator: object = None
        prompt_ids: list = field(default_factory=lambda: [1, 2, 3])
        output_ids: list = field(default_factory=lambda: [5])

    # One torch thread: on a shared host the 2-thread pool's wake-ups dominate small ops (ms each) and hide
    # the work being measured; the HTTP figures above are the end-to-end truth.
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(_model_dir())
    factory = GrammarCompiler(tokenizer, vocab_size=8192).factory(json_schema_spec(GUIDED_SCHEMA, param="bench"))

    def rows(k: int) -> list[Row]:
        out = []
        for i in range(batch):
            constraint = None
            if i < k:
                constraint = factory()
                constraint.accept_text('{"digits": [1, 2, ')
            out.append(Row(SamplingParams(temperature=0.0), constraint))
        return out

    sampler = BatchSampler(vocab_size=8192, eos_token_ids=[tokenizer.eos_token_id])
    logits = torch.randn(batch, 8192)

    def median_us(fn, n: int = 300) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1e6, 1)

    free_rows, guided_rows = rows(0), rows(guided)
    bitmask = torch.full((batch, 256), -1, dtype=torch.int32)
    constraints = [r.constraint for r in guided_rows[:guided]]
    return {
        "sampling_step_us_all_free": median_us(lambda: sampler.sample(logits, free_rows)),
        "sampling_step_us_half_guided": median_us(lambda: sampler.sample(logits, guided_rows)),
        "mask_fill_us_guided_rows_batched": median_us(lambda: fill_bitmasks(constraints, bitmask, list(range(guided)))),
    }


def _decode_step_ms(model_dir: Path, batch: int) -> float:
    """The runtime's own decode forward for ``batch`` sequences (1 torch thread, as the sampling figures)."""
    import torch

    from runtime.engine.model import load_causal_lm, make_runner, pick_device

    torch.set_num_threads(1)
    device = pick_device()
    model = load_causal_lm(str(model_dir), revision=None, token=None, dtype=torch.float32, device=device)
    runner = make_runner(model, max_slots=batch, max_total_tokens=512, force_hf=False)
    prompt = list(range(10, 80))
    slots = list(range(batch))
    runner.prefill(slots, [prompt] * batch)
    times = []
    with torch.inference_mode():
        for step in range(24):
            t0 = time.perf_counter()
            runner.decode([42] * batch, [len(prompt) + step] * batch)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[4:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    guided = args.batch // 2
    model_dir = _model_dir()
    base, mixed = [], []
    with _server(model_dir) as url:
        asyncio.run(_batch(url, batch=args.batch, guided=guided, tokens=args.tokens))  # warm-up, compiles the grammar
        for _ in range(args.rounds):
            base.append(asyncio.run(_batch(url, batch=args.batch, guided=0, tokens=args.tokens)))
            mixed.append(asyncio.run(_batch(url, batch=args.batch, guided=guided, tokens=args.tokens)))
    base_tps = statistics.median(r["tokens_per_s"] for r in base)
    mixed_tps = statistics.median(r["tokens_per_s"] for r in mixed)
    # Each guided round runs right after its baseline round: the per-pair ratio cancels most of the drift of a
    # shared machine's load; its median is the headline figure.
    pair_ratios = [m["tokens_per_s"] / b["tokens_per_s"] for b, m in zip(base, mixed, strict=True)]
    pair_ratio = statistics.median(pair_ratios)
    step = _sampling_step_costs(args.batch, guided)
    forward_ms = _decode_step_ms(model_dir, args.batch)
    extra_ms = (step["sampling_step_us_half_guided"] - step["sampling_step_us_all_free"]) / 1e3
    step_ms = forward_ms + step["sampling_step_us_all_free"] / 1e3
    out = {
        "model": "tiny llama (hidden 384, 6 layers, vocab 8192, fp32)",
        "batch": args.batch,
        "guided_requests": guided,
        "new_tokens_each": args.tokens,
        "rounds": args.rounds,
        "baseline_tokens_per_s": round(base_tps, 1),
        "guided_tokens_per_s": round(mixed_tps, 1),
        "throughput_ratio_of_medians": round(mixed_tps / base_tps, 3),
        "throughput_ratio_paired_median": round(pair_ratio, 3),
        "throughput_cost_pct": round((1 - pair_ratio) * 100, 1),
        "goal_cost_pct_max": 15,
        "baseline_rounds_tokens_per_s": [round(r["tokens_per_s"], 1) for r in base],
        "guided_rounds_tokens_per_s": [round(r["tokens_per_s"], 1) for r in mixed],
        "compile": _compile_times(),
        "engine_step": {
            **step,
            "decode_forward_ms_batch": round(forward_ms, 2),
            "estimated_cost_pct_from_step_costs": round(extra_ms / (step_ms + extra_ms) * 100, 1),
        },
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
