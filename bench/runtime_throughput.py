"""Runtime throughput and latency over HTTP, ours against the naive ``model.generate``-per-request server.

Fixed, documented shape: the tiny model (Llama, hidden 384, 6 layers, 6 heads / 2 KV heads, FFN 1024, vocab 8192,
15.7M parameters, fp32). Workload: 64 requests from 32 concurrent clients, prompts of 64–80 tokens cut from the
standard library's ``argparse.py`` (sent as token ids, so both servers see identical inputs), 64 new tokens each
(``ignore_eos``, greedy), streamed ``/v1/completions``. Measured per server, one server at a time on the same
machine in the same run: output tokens/s, time to first token p50/p99, inter-token latency p50/p99, and
single-stream tokens/s (8 sequential requests); for ours also the decode batch sizes reached and the n-gram
drafts proposed and accepted at 32 clients (from /metrics),
and the single stream's n-gram speculation (drafts, acceptance, tokens per decode step) next to the same single
stream on a server started with SPECULATE=0 (same text required).
Greedy outputs of both servers are compared token for token. ``--dtype float32,bfloat16,float16`` runs our server
once per DTYPE in the same run (on CPU the 16-bit ones keep the weights in 16 bits and compute in fp32: a decode
step streams half the bytes), all started together and measured in turn, ``--rounds`` times interleaved (medians:
on a shared machine the load shifts within minutes), and prints each one's figures, resident memory and
single-stream memory ceiling side by side; the first DTYPE is the one compared with the naive server and run
without speculation.

Reading the figures: at this shape every request prefills about as many tokens (64-80) as it generates (64), so
prefill is close to half the work; at ~19 MFLOP per prompt token and ~25 MFLOP per generated token the whole run
is ~190 GFLOP, i.e. ~2,000 output tok/s at a 2-core fp32 peak of ~100 GFLOP/s. The ``machine`` section measures
that peak and the memory bandwidth in the same run and prints the resulting ceilings (bench/machine.py): the
compute ceiling for the whole workload, and the single-stream ceiling without speculation (every decode step reads
all ~50 MB of fp32 weights). Both servers run under the same
OMP_WAIT_POLICY=PASSIVE (spinning OpenMP workers collapse on a shared CPU). On a loaded machine absolute numbers
swing widely; the ratios are measured back to back in the same run.

The load generator runs on the same two cores as the server, so its own cost is part of every figure. It streams
with aiohttp (as vLLM's benchmarks/benchmark_serving.py does) and splits SSE events itself: measured here,
httpx's ``aiter_lines`` spent ~340 us of CPU per event (1.3-1.5 CPU-s per 4,096-token run, ~15% of the machine),
aiohttp ~100 us. Every event is still parsed as JSON and timestamped on arrival.

Prints one JSON object. Usage: ``python bench/runtime_throughput.py [--requests 64] [--clients 32]
[--dtype float32,bfloat16,float16 [--rounds 5]]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(cmd: list[str], env: dict[str, str], port: int, *, timeout: float = 300):
    # Both servers get the same OpenMP policy (ours sets PASSIVE itself; spinning workers collapse on a shared CPU).
    env = {"OMP_WAIT_POLICY": "PASSIVE", **env}
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {cmd}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rss_mib(pid: int) -> int:
    """The process's resident memory now (VmRSS), MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def _prompts(model_dir: Path, count: int, seed: int = 0) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    ids = tok(text, add_special_tokens=False).input_ids
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = rng.randint(63, 79)  # + BOS = 64..80 tokens
        start = rng.randrange(0, len(ids) - length)
        out.append([tok.bos_token_id, *ids[start:start + length]])
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    idx = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return round(values[idx], 4)


async def _one(session: aiohttp.ClientSession, url: str, prompt: list[int], max_tokens: int) -> dict:
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    arrivals: list[float] = []
    tokens = 0
    text = ""
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        pending = b""
        async for data in resp.content.iter_any():
            *events, pending = (pending + data).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                chunk = json.loads(event[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if chunk["choices"]:
                    arrivals.append(time.perf_counter())
                    text += chunk["choices"][0]["text"]
    return {"start": start, "arrivals": arrivals, "tokens": tokens, "text": text}


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=600))


async def _load(url: str, prompts: list[list[int]], *, clients: int, max_tokens: int) -> dict:
    async with _session(clients + 4) as session:
        queue = list(enumerate(prompts))
        results: dict[int, dict] = {}

        async def worker():
            while queue:
                i, prompt = queue.pop(0)
                results[i] = await _one(session, url, prompt, max_tokens)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ttft = [r["arrivals"][0] - r["start"] for r in results.values() if r["arrivals"]]
    itl = [b - a for r in results.values() for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    total = sum(r["tokens"] for r in results.values())
    return {
        "output_tokens": total,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(total / wall, 1),
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p99_s": _pct(ttft, 99),
        "itl_p50_s": _pct(itl, 50),
        "itl_p99_s": _pct(itl, 99),
        "texts": [results[i]["text"] for i in sorted(results)],
    }


async def _single(url: str, prompts: list[list[int]], *, max_tokens: int) -> dict:
    async with _session(2) as session:
        t0 = time.perf_counter()
        total = 0
        texts = []
        for prompt in prompts:
            result = await _one(session, url, prompt, max_tokens)
            total += result["tokens"]
            texts.append(result["text"])
        return {"tokens_per_s": round(total / (time.perf_counter() - t0), 1), "texts": texts}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _speculation(before: str, after: str) -> dict:
    """N-gram drafts proposed and accepted between two /metrics scrapes."""
    drafted = _metric(after, "vllm:spec_decode_num_draft_tokens_total") - _metric(
        before, "vllm:spec_decode_num_draft_tokens_total")
    accepted = _metric(after, "vllm:spec_decode_num_accepted_tokens_total") - _metric(
        before, "vllm:spec_decode_num_accepted_tokens_total")
    return {"drafted": int(drafted), "accepted": int(accepted),
            "acceptance": round(accepted / drafted, 2) if drafted else None}


def _measure(url: str, prompts, single_prompts, args, *, with_metrics: bool) -> dict:
    # Warm-up: one small concurrent round so first-request costs are not measured.
    asyncio.run(_load(url, prompts[:4], clients=4, max_tokens=8))
    before = httpx.get(f"{url}/metrics").text if with_metrics else ""
    out = asyncio.run(_load(url, prompts, clients=args.clients, max_tokens=args.max_tokens))
    if with_metrics:
        out["kernels"] = httpx.get(f"{url}/info").json().get("kernels")
        after = httpx.get(f"{url}/metrics").text
        steps = _metric(after, "endpointctl_decode_steps_total") - _metric(before, "endpointctl_decode_steps_total")
        bsum = _metric(after, "endpointctl_decode_batch_size_total") - _metric(before, "endpointctl_decode_batch_size_total")
        out["decode_batch_size_max"] = int(_metric(after, "endpointctl_batch_max_size_reached"))
        out["decode_batch_size_mean"] = round(bsum / steps, 1) if steps else None
        out["decode_steps"] = int(steps)
        out["speculation"] = _speculation(before, after)
    before = httpx.get(f"{url}/metrics").text if with_metrics else ""
    single = asyncio.run(_single(url, single_prompts, max_tokens=args.max_tokens))
    out["single_stream_tokens_per_s"] = single["tokens_per_s"]
    if with_metrics:
        after = httpx.get(f"{url}/metrics").text

        steps = _metric(after, "endpointctl_decode_steps_total") - _metric(before, "endpointctl_decode_steps_total")
        out["single_stream_speculation"] = {
            **_speculation(before, after),
            "tokens_per_decode_step": round(args.single * (args.max_tokens - 1) / steps, 2) if steps else None,
        }
    # Greedy must not depend on the batch: the same prompts alone vs. inside the 32-client run.
    same = sum(a == b for a, b in zip(single["texts"], out["texts"], strict=False))
    out["greedy_alone_equals_batched"] = f"{same}/{len(single['texts'])}"
    out["single_texts"] = single["texts"]
    return out


def _dtype_table(by_dtype: dict[str, dict], rounds: dict[str, dict[str, list[float]]], machine: dict,
                 costs: dict, prompts: list[list[int]], new_tokens: int) -> dict:
    """Our server per DTYPE, side by side: throughput and single stream (medians over the interleaved rounds, and
    each round's figure), latency of the first round, memory, the single-stream memory ceiling at that weight
    width, and the ratios of the medians to the first DTYPE's (whose greedy text the others are compared with:
    16-bit weights are rounded weights, so their text may part from fp32's after a while)."""
    from machine import ceilings

    first, first_rounds = next(iter(by_dtype.values())), next(iter(rounds.values()))
    table = {}
    for dtype, r in by_dtype.items():
        width = 4 if dtype == "float32" else 2
        ceiling = ceilings(machine, costs, [len(p) for p in prompts], new_tokens, dtype_bytes=width)
        median = {key: round(statistics.median(values), 1) for key, values in rounds[dtype].items()}
        table[dtype] = {
            "kernels": r.get("kernels"),
            "tokens_per_s": median["tokens_per_s"],
            "single_stream_tokens_per_s": median["single_stream_tokens_per_s"],
            "rounds": rounds[dtype],
            "ttft_p50_s": r["ttft_p50_s"], "ttft_p99_s": r["ttft_p99_s"],
            "itl_p50_s": r["itl_p50_s"], "itl_p99_s": r["itl_p99_s"],
            "decode_steps": r.get("decode_steps"),
            "rss_mib": r["rss_mib"],
            "memory_ceiling_single_stream_tokens_per_s": ceiling["memory_ceiling_single_stream_tokens_per_s"],
            "greedy_alone_equals_batched": r["greedy_alone_equals_batched"],
            "tokens_per_s_ratio": round(median["tokens_per_s"] / statistics.median(first_rounds["tokens_per_s"]),
                                        2),
            "single_stream_ratio": round(median["single_stream_tokens_per_s"]
                                         / statistics.median(first_rounds["single_stream_tokens_per_s"]), 2),
            "same_text_as_first": f"{sum(a == b for a, b in zip(r['texts'], first['texts'], strict=True))}"
                                  f"/{len(first['texts'])}",
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--single", type=int, default=8, help="sequential requests for single-stream tok/s")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--dtype", default="float32",
                        help="our server's DTYPE, or several comma-separated (float32,bfloat16,float16), each "
                             "measured in turn; the first is compared with the naive server and without speculation")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with several --dtype: measure them this many times, interleaved (medians reported)")
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or set(dtypes) - {"float32", "bfloat16", "float16"} or len(set(dtypes)) < len(dtypes):
        parser.error(f"--dtype: distinct values among float32, bfloat16, float16; got {args.dtype!r}")

    from runtime.tinymodel import cached_tiny_model

    model_dir = cached_tiny_model()
    prompts = _prompts(model_dir, args.requests)
    single_prompts = prompts[: args.single]
    report: dict = {
        "model": {"arch": "llama", "hidden": 384, "layers": 6, "heads": 6, "kv_heads": 2, "ffn": 1024,
                  "vocab": 8192, "params_m": 15.7, "dtype": dtypes[0], "path": str(model_dir)},
        "workload": {"requests": args.requests, "clients": args.clients, "prompt_tokens": "64-80",
                     "new_tokens": args.max_tokens, "greedy": True, "ignore_eos": True, "route": "/v1/completions stream",
                     "cpus": os.cpu_count()},
    }
    # The machine's own limits, measured now (before any server runs): see bench/machine.py.
    from transformers import AutoConfig

    from machine import ceilings, measure_machine, model_costs

    machine = measure_machine()
    costs = model_costs(AutoConfig.from_pretrained(model_dir))
    report["machine"] = {**machine, **ceilings(machine, costs, [len(p) for p in prompts], args.max_tokens)}
    env = {"MODEL_ID": str(model_dir), "HOSTNAME": "127.0.0.1"}
    by_dtype, rounds = {}, {}
    with contextlib.ExitStack() as servers:  # all up at once (idle ones cost no CPU), measured in turn
        started = {}
        for dtype in dtypes:
            port = _free_port()
            started[dtype] = servers.enter_context(
                _server([sys.executable, "-m", "runtime"], {**env, "PORT": str(port), "DTYPE": dtype}, port))
        for dtype, (url, pid) in started.items():
            by_dtype[dtype] = _measure(url, prompts, single_prompts, args, with_metrics=True)
            by_dtype[dtype]["rss_mib"] = _rss_mib(pid)
            rounds[dtype] = {"tokens_per_s": [by_dtype[dtype]["tokens_per_s"]],
                             "single_stream_tokens_per_s": [by_dtype[dtype]["single_stream_tokens_per_s"]]}
        for _ in range(args.rounds - 1 if len(dtypes) > 1 else 0):
            for dtype, (url, _) in started.items():
                load = asyncio.run(_load(url, prompts, clients=args.clients, max_tokens=args.max_tokens))
                single = asyncio.run(_single(url, single_prompts, max_tokens=args.max_tokens))
                rounds[dtype]["tokens_per_s"].append(load["tokens_per_s"])
                rounds[dtype]["single_stream_tokens_per_s"].append(single["tokens_per_s"])
    ours = by_dtype[dtypes[0]]
    report["ours"] = ours
    if len(dtypes) > 1:
        report["by_dtype"] = _dtype_table(by_dtype, rounds, report["machine"], costs, prompts, args.max_tokens)
    # The same server without n-gram speculation (SPECULATE=0), single stream only: what the drafts are worth on
    # this text. (At 32 clients no rows are free for drafts, so the throughput run is unaffected.)
    port = _free_port()
    with _server([sys.executable, "-m", "runtime"], {**env, "PORT": str(port), "DTYPE": dtypes[0], "SPECULATE": "0"},
                 port) as (url, _):
        asyncio.run(_load(url, prompts[:4], clients=4, max_tokens=8))
        plain = asyncio.run(_single(url, single_prompts, max_tokens=args.max_tokens))
    ours["single_stream_tokens_per_s_without_speculation"] = plain["tokens_per_s"]
    ours["single_stream_same_text_without_speculation"] = plain["texts"] == ours["single_texts"]
    if not args.skip_naive:
        port = _free_port()
        with _server([sys.executable, str(REPO / "bench" / "naive_server.py"), str(model_dir), str(port)], {},
                     port) as (url, _):
            naive = _measure(url, prompts, single_prompts, args, with_metrics=False)
        report["naive"] = naive
        same = sum(a == b for a, b in zip(ours["texts"], naive["texts"], strict=True))
        report["greedy_outputs_equal_to_hf_generate"] = f"{same}/{len(prompts)}"
        report["speedup_vs_naive"] = round(ours["tokens_per_s"] / naive["tokens_per_s"], 2)
        report["single_stream_speedup_vs_naive"] = round(
            ours["single_stream_tokens_per_s"] / naive["single_stream_tokens_per_s"], 2)
        naive.pop("texts")
        naive.pop("single_texts")
    for result in by_dtype.values():
        result.pop("texts")
        result.pop("single_texts")
    report["machine"]["ours_fraction_of_compute_ceiling"] = round(
        ours["tokens_per_s"] / report["machine"]["compute_ceiling_tokens_per_s"], 2)
    report["goals"] = {
        "tokens_per_s>=1800": ours["tokens_per_s"] >= 1800,
        "speedup>=8x": report.get("speedup_vs_naive", 0) >= 8,
        "ttft_p99<1s": (ours["ttft_p99_s"] or 99) < 1.0,
        "single_stream>=350": ours["single_stream_tokens_per_s"] >= 350,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
