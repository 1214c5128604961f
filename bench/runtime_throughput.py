"""Runtime throughput and latency over HTTP, ours against the naive ``model.generate``-per-request server and, on the
real model, against transformers serve and llama.cpp's llama-server.

The tiny workload (the default, ``--workload tiny``) has a fixed, documented shape: the tiny model (Llama, hidden
384, 6 layers, 6 heads / 2 KV heads, FFN 1024, vocab 8192, 15.7M parameters, fp32). Workload: 64 requests from
32 concurrent clients, prompts of 64–80 tokens cut from the standard library's ``argparse.py`` (sent as token ids,
so both servers see identical inputs), 64 new tokens each
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

The chat workload (``--workload chat``) runs the real model, SmolLM2-135M-Instruct (built and cached as ``endpointctl
dev model smollm2-135m-instruct`` builds it: runtime/realmodels.py), on requests that look like real use of a small
instruct model: questions, explanations, lists, rewriting, summaries of short paragraphs, some with a system prompt
or an earlier turn (bench/chat_workload.py), rendered with the model's chat template and sent as token ids. Random
weights flatter n-gram speculation (their greedy text loops); real text is where its acceptance means something.
Three runs per server: ``fixed`` (64 requests from 32 clients, 64 new tokens each, ``ignore_eos``, greedy: the
comparable one), ``single_stream`` (8 requests one after another, likewise) and ``natural`` (64 requests from 32
clients, up to 256 tokens, each stopping at EOS), each with tokens/s, TTFT and ITL p50/p99; per server its resident
memory after the runs (with its child processes) and its peak; for ours, per run, the n-gram drafts proposed and
accepted and the mean decode batch (from /metrics), and the single stream again on a server with SPECULATE=0.
Servers, one at a time, ours and llama-server of the same precision back to back: ours at each ``--dtype``
(default float32, bfloat16, float16), the naive server (fp32, HF ``generate``), ``transformers serve
--continuous-batching`` on the same local directory offline (it takes text prompts only, the same conversations
rendered as text, checked to tokenize back to the same ids; it refuses ``ignore_eos``, so its fixed run sends a
``generation_config`` without an EOS token, which turns EOS off in its continuous batching; its paged KV cache gets
llama-server's context in tokens), and with ``--llama-cpp`` llama.cpp's ``llama-server`` (``-np <clients> -t <cpus>
-c <enough for every slot>``; ``cache_prompt`` off: the runs repeat the same prompts, as real traffic would not, and
ours keeps no prompt cache) on the snapshot converted by llama.cpp's own ``convert_hf_to_gguf.py`` to f32 and f16
and on the shipped Q4_1 file the snapshot was dequantized from (so every server holds the same weight values).
bench/llamacpp.py builds llama-server from the ``llama-cpp-python`` sdist's vendored llama.cpp and converts the
weights, once, cached under ``~/.cache/endpointctl/llamacpp/<version>`` (minutes of compiling on 2 cores; the report
says how long it took and whether this run built it). A server that fails is reported with its error and the run
goes on. The ``goals`` compare each of our DTYPEs with llama-server in the same run: 32 clients >= 1.3x llama-server
of the same precision (fp32 against f32, bf16/fp16 against f16), single stream >= 1.0x and natural length >= 1.5x
llama-server f16, TTFT p99 at 32 clients no worse than llama-server's of the same precision (``ratios`` has the
figures; None where llama-server was not run).

Prints one JSON object. Usage: ``python bench/runtime_throughput.py [--requests 64] [--clients 32]
[--dtype float32,bfloat16,float16 [--rounds 5]]`` (tiny), ``python bench/runtime_throughput.py --workload chat
[--llama-cpp] [--skip-naive] [--skip-transformers-serve] [--dtype ...]`` (chat; progress goes to stderr).
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
import tempfile
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
    # Every server gets the same OpenMP policy (ours sets PASSIVE itself; spinning workers collapse on a shared CPU).
    env = {"OMP_WAIT_POLICY": "PASSIVE", **env}
    log = tempfile.TemporaryFile()  # the server's output, quoted when it fails to start
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def failed(why: str) -> RuntimeError:
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
        return RuntimeError(f"{why}: {' '.join(cmd[:4])} ...\n" + "\n".join(tail))

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise failed(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise failed("server did not become healthy")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _rss_mib(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory now (VmRSS), or its peak so far (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith(field + ":"))


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


async def _one(session: aiohttp.ClientSession, url: str, prompt: list[int] | str, max_tokens: int,
               extra: dict | None = None) -> dict:
    """One streamed completion. ``extra`` is merged into the body (a None value drops that key: servers differ in
    what they accept). A token arrives with each event that carries text; the count is the server's own usage
    (llama-server's ``timings`` where it sends no usage)."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    body = {key: value for key, value in {**body, **(extra or {})}.items() if value is not None}
    start = time.perf_counter()
    arrivals: list[float] = []
    tokens = 0
    text = ""
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status >= 400:
            raise RuntimeError(f"{url}/v1/completions answered {resp.status}: {(await resp.text())[:300]}")
        pending = b""
        async for data in resp.content.iter_any():
            *events, pending = (pending + data).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                chunk = json.loads(event[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{url} streamed an error: {str(chunk['error'])[:300]}")
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif chunk.get("timings") and not tokens:
                    tokens = chunk["timings"].get("predicted_n", 0)
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    arrivals.append(time.perf_counter())
                    text += chunk["choices"][0]["text"]
    return {"start": start, "arrivals": arrivals, "tokens": tokens, "text": text}


def _session(connections: int, *, fresh_connections: bool = False, timeout: float = 600) -> aiohttp.ClientSession:
    # fresh_connections: one connection per request. llama-server closes a connection after a streamed answer
    # without saying so, and a reused one then fails ("Can not write request body").
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=fresh_connections),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


async def _load(url: str, prompts: list[list[int]] | list[str], *, clients: int, max_tokens: int,
                extra: dict | None = None, fresh_connections: bool = False, timeout: float = 600) -> dict:
    """``timeout``: seconds one request may take, queueing included (a load far above the pool's size queues long)."""
    async with _session(clients + 4, fresh_connections=fresh_connections, timeout=timeout) as session:
        queue = list(enumerate(prompts))
        results: dict[int, dict] = {}

        async def worker():
            while queue:
                i, prompt = queue.pop(0)
                results[i] = await _one(session, url, prompt, max_tokens, extra)

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


async def _single(url: str, prompts: list[list[int]], *, max_tokens: int, extra: dict | None = None) -> dict:
    async with _session(2) as session:
        t0 = time.perf_counter()
        total = 0
        texts = []
        for prompt in prompts:
            result = await _one(session, url, prompt, max_tokens, extra)
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


# --- The chat workload on the real model (--workload chat) ---------------------------------------------------------


def _tree_rss_mib(pid: int) -> int:
    """Resident memory of the process and all its descendants now, MiB (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    total_kib, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError, StopIteration), open(f"/proc/{current}/status") as status:
            total_kib += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total_kib // 1024


def _chat_runs(url: str, pid: int, prompts: list, single_prompts: list, args, *, fixed: dict, natural: dict,
               metrics: bool) -> dict:
    """One server through the chat workload's three runs: ``fixed`` (``--clients`` clients, ``--max-tokens`` each,
    EOS ignored), ``single_stream`` (``--single`` requests one after another, likewise) and ``natural`` (the
    clients again, up to ``--natural-max-tokens``, each stopping at EOS). ``fixed`` / ``natural`` are the request
    body's extra fields for that server. With ``metrics`` (ours), each run's n-gram speculation and mean decode
    batch from /metrics."""
    # Every server gets a new connection per request (see _session), so none pays what the others do not.
    asyncio.run(_load(url, prompts[:4], clients=4, max_tokens=8, extra=fixed, fresh_connections=True))  # warm-up
    runs = {"fixed": (prompts, args.clients, args.max_tokens, fixed),
            "single_stream": (single_prompts, 1, args.max_tokens, fixed),
            "natural": (prompts, args.clients, args.natural_max_tokens, natural)}
    out: dict = {}
    for run, (batch, clients, max_tokens, extra) in runs.items():
        before = httpx.get(f"{url}/metrics").text if metrics else ""
        result = asyncio.run(_load(url, batch, clients=clients, max_tokens=max_tokens, extra=extra,
                                   fresh_connections=True))
        result["mean_output_tokens"] = round(result["output_tokens"] / len(batch), 1)
        if metrics:
            after = httpx.get(f"{url}/metrics").text
            steps = _metric(after, "endpointctl_decode_steps_total") - _metric(before, "endpointctl_decode_steps_total")
            batch_sum = (_metric(after, "endpointctl_decode_batch_size_total")
                         - _metric(before, "endpointctl_decode_batch_size_total"))
            result["decode_batch_size_mean"] = round(batch_sum / steps, 1) if steps else None
            result["speculation"] = _speculation(before, after)
            if clients == 1 and steps:  # tokens a sequence gains per decode step (1 without accepted drafts)
                result["speculation"]["tokens_per_decode_step"] = round(
                    (result["output_tokens"] - len(batch)) / steps, 2)
        out[run] = result
    out["rss_mib"] = _tree_rss_mib(pid)
    out["peak_rss_mib"] = _rss_mib(pid, "VmHWM")
    return out


def _same(a: dict, b: dict, run: str, special: list[str]) -> str | None:
    """How many requests of ``run`` two servers answered with the same text, as ``"k/n"``. The ``special`` tokens'
    text is left out first: servers differ in whether they print them (an EOS, or the special tokens generated
    past it with EOS ignored), which is not a difference in what the model chose."""
    if "error" in a or "error" in b:
        return None

    def plain(text: str) -> str:
        for token in special:
            text = text.replace(token, "")
        return text

    texts = a[run]["texts"], b[run]["texts"]
    return f"{sum(plain(x) == plain(y) for x, y in zip(*texts, strict=True))}/{len(texts[0])}"


def _prepare_llama_cpp(model_dir: Path) -> dict:
    """llama-server and the GGUF files it serves (built and converted on the first run, cached: bench/llamacpp.py)."""
    import llamacpp

    from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_gguf_dir

    started = time.monotonic()
    built_before = bool(llamacpp.build_info())
    server = llamacpp.ensure_server()
    weights = {outtype: llamacpp.ensure_gguf(model_dir, outtype) for outtype in ("f32", "f16")}
    # The shipped file as llama.cpp users run it; our snapshot is this file dequantized, so all hold the same values.
    weights["q4_1"] = cached_gguf_dir(SMOLLM2_135M_INSTRUCT.name) / SMOLLM2_135M_INSTRUCT.gguf_name
    info = llamacpp.build_info()
    return {
        "server": str(server), "llama_cpp_python": llamacpp.VERSION, "version": info.get("version"),
        "build_s": info.get("build_s"), "built_in_this_run": not built_before,
        "prepare_s": round(time.monotonic() - started, 1),
        "weights": {t: {"path": str(path), "mib": round(path.stat().st_size / 2**20)} for t, path in weights.items()},
    }


def _transformers_serve(model_dir: Path, port: int, context_tokens: int) -> list[str]:
    """``transformers serve --continuous-batching`` pinned to the snapshot (a local directory, offline), fp32 on
    CPU. Its paged KV cache gets as many tokens as llama-server's context (left to itself it sized the cache from
    the machine's memory: 14 GB resident here); blocks of 32 tokens."""
    script = Path(sys.executable).with_name("transformers")
    return [str(script), "serve", str(model_dir), "--continuous-batching", "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--dtype", "float32", "--cb-block-size", "32",
            "--cb-num-blocks", str(-(-context_tokens // 32)), "--log-level", "warning"]


def _chat(args, dtypes: list[str]) -> dict:
    """The real model's chat workload (the module docstring's second part); returns the report."""
    from transformers import AutoConfig, AutoTokenizer

    from chat_workload import SAME_PRECISION, conversations, ratios_and_goals, render, requests
    from machine import ceilings, measure_machine, model_costs
    from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_model

    model_dir = cached_model(SMOLLM2_135M_INSTRUCT.name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = requests(args.requests)
    prompts = render(tokenizer, messages)
    single_prompts = prompts[: args.single]
    # transformers serve takes text only: the same conversations rendered as text, which it tokenizes back.
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    same_ids = sum(tokenizer(t, add_special_tokens=False).input_ids == p for t, p in zip(texts, prompts, strict=True))
    lengths = [len(p) for p in prompts]
    config = AutoConfig.from_pretrained(model_dir)
    report: dict = {
        "model": {"name": SMOLLM2_135M_INSTRUCT.title, "arch": config.model_type, "hidden": config.hidden_size,
                  "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
                  "kv_heads": config.num_key_value_heads, "ffn": config.intermediate_size,
                  "vocab": config.vocab_size, "path": str(model_dir)},
        "workload": {"conversations": len(conversations()), "requests": args.requests, "clients": args.clients,
                     "prompt_tokens": {"min": min(lengths), "mean": round(statistics.mean(lengths), 1),
                                       "max": max(lengths)},
                     "fixed": {"new_tokens": args.max_tokens, "ignore_eos": True},
                     "single_stream": {"requests": args.single, "new_tokens": args.max_tokens, "ignore_eos": True},
                     "natural": {"max_tokens": args.natural_max_tokens, "stops_at_eos": True},
                     "greedy": True, "route": "/v1/completions stream (token ids; text for transformers serve)",
                     "text_prompts_tokenize_to_the_same_ids": f"{same_ids}/{len(prompts)}", "cpus": os.cpu_count()},
    }
    machine = measure_machine()
    costs = model_costs(config)
    report["machine"] = {
        **machine, **ceilings(machine, costs, lengths, args.max_tokens),
        "memory_ceiling_single_stream_16bit_tokens_per_s": ceilings(
            machine, costs, lengths, args.max_tokens, dtype_bytes=2)["memory_ceiling_single_stream_tokens_per_s"],
    }
    llama = None
    if args.llama_cpp:
        try:
            llama = _prepare_llama_cpp(model_dir)
        except Exception as exc:  # noqa: BLE001 - the run goes on without it and says why
            report["llama_cpp"] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            report["llama_cpp"] = llama
    else:
        report["llama_cpp"] = "not run (--llama-cpp builds and runs it)"
    # Context for llama-server and transformers serve: every slot holds its longest request.
    context = args.clients * (-(-(max(lengths) + args.natural_max_tokens + 8) // 256) * 256)
    model_env = {"MODEL_ID": str(model_dir), "HOSTNAME": "127.0.0.1"}
    ours_fixed, ours_natural = {}, {"ignore_eos": None}

    # name -> (command given a port, environment, prompts, fixed-run and natural-run body fields, /metrics)
    servers: dict[str, tuple] = {}

    def ours(dtype: str, **env: str):
        return (lambda port: [sys.executable, "-m", "runtime"],
                {**model_env, "DTYPE": dtype, **env}, prompts, ours_fixed, ours_natural, True)

    def llama_server(outtype: str):
        def command(port: int) -> list[str]:
            return [llama["server"], "-m", llama["weights"][outtype]["path"], "--host", "127.0.0.1",
                    "--port", str(port), "-np", str(args.clients), "-t", str(os.cpu_count()), "-c", str(context),
                    "--alias", "bench"]

        # No prompt cache: the fixed and natural runs send the same 64 prompts, and llama-server would serve the
        # repeats from the KV its slots still hold (real traffic would not repeat them; ours keeps no prompt cache).
        fixed = {"cache_prompt": False}
        return command, {}, prompts, fixed, {**fixed, "ignore_eos": None}, False

    order = [f"ours_{dtypes[0]}"]
    if llama:
        order.append(f"llama_server_{SAME_PRECISION[dtypes[0]]}")
    for dtype in dtypes[1:]:
        order.append(f"ours_{dtype}")
    if llama:
        order += [f"llama_server_{t}" for t in ("f32", "f16", "q4_1") if f"llama_server_{t}" not in order]
    for name in order:
        servers[name] = ours(name.removeprefix("ours_")) if name.startswith("ours_") else llama_server(
            name.removeprefix("llama_server_"))
    if not args.skip_naive:
        servers["naive"] = (lambda port: [sys.executable, str(REPO / "bench" / "naive_server.py"), str(model_dir),
                                          str(port)], {}, prompts, {}, {"ignore_eos": None}, False)
    if not args.skip_transformers_serve:
        # It answers 422 to fields it does not know (ignore_eos) and to a "model" other than the one it is pinned
        # to; a generation_config of its own without eos_token_id turns EOS off in its continuous batching (it logs
        # "eos_token_id not set ... disabled"), which is what ignore_eos does; the natural run uses the model's.
        plain = {"model": None, "ignore_eos": None, "stream_options": None}
        servers["transformers_serve"] = (
            lambda port: _transformers_serve(model_dir, port, context), {"HF_HUB_OFFLINE": "1"}, texts,
            {**plain, "generation_config": json.dumps({"do_sample": False})}, plain, False)

    # One server up at a time (memory: transformers serve alone holds GBs), ours and llama-server of the same
    # precision back to back.
    results: dict[str, dict] = {}
    for name, (command, env, server_prompts, fixed, natural, metrics) in servers.items():
        port = _free_port()
        cmd = command(port)
        started = time.monotonic()
        try:
            with _server(cmd, {**env, "PORT": str(port)}, port, timeout=600) as (url, pid):
                results[name] = _chat_runs(url, pid, server_prompts, server_prompts[: args.single], args,
                                           fixed=fixed, natural=natural, metrics=metrics)
                if metrics:
                    results[name]["kernels"] = httpx.get(f"{url}/info").json().get("kernels")
        except Exception as exc:  # noqa: BLE001 - one server failing must not lose the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["command"] = " ".join(cmd) if not metrics else f"DTYPE={env['DTYPE']} python -m runtime"
        results[name]["measured_s"] = round(time.monotonic() - started, 1)
        print(f"{name}: {results[name].get('error') or 'measured'} ({results[name]['measured_s']} s)",
              file=sys.stderr, flush=True)

    # What the drafts are worth on this text: our first DTYPE's single stream again with SPECULATE=0.
    first = results[f"ours_{dtypes[0]}"]
    port = _free_port()
    try:
        with _server([sys.executable, "-m", "runtime"], {**model_env, "DTYPE": dtypes[0], "SPECULATE": "0",
                                                         "PORT": str(port)}, port) as (url, _):
            asyncio.run(_load(url, prompts[:4], clients=4, max_tokens=8, fresh_connections=True))
            plain_single = asyncio.run(_load(url, single_prompts, clients=1, max_tokens=args.max_tokens,
                                             fresh_connections=True))
        report["ours_single_stream_without_speculation"] = {
            "dtype": dtypes[0], "tokens_per_s": plain_single["tokens_per_s"],
            "with_speculation_ratio": (round(first["single_stream"]["tokens_per_s"] / plain_single["tokens_per_s"], 2)
                                       if "error" not in first else None),
            "same_text": None if "error" in first else plain_single["texts"] == first["single_stream"]["texts"],
        }
    except Exception as exc:  # noqa: BLE001
        report["ours_single_stream_without_speculation"] = {"error": f"{type(exc).__name__}: {exc}"}

    # Greedy text: ours against transformers' generate (the naive server, fp32), and each peer against ours.
    special = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    report["greedy_same_text"] = {}
    for name in results:
        if name != f"ours_{dtypes[0]}":
            report["greedy_same_text"][f"{name}_vs_ours_{dtypes[0]}"] = {
                run: _same(results[name], first, run, special) for run in ("fixed", "natural")}
    for result in results.values():
        for run in ("fixed", "single_stream", "natural"):
            if run in result:
                result[run].pop("texts")
    report["servers"] = results
    report["ratios"], report["goals"] = ratios_and_goals(results)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("tiny", "chat"), default="tiny",
                        help="tiny: the random tiny model on source-code prompts (default); chat: "
                             "SmolLM2-135M-Instruct on chat requests, beside the naive server, transformers serve "
                             "and (--llama-cpp) llama-server")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--natural-max-tokens", type=int, default=256,
                        help="chat: the natural-length run's max_tokens (each request stops at EOS)")
    parser.add_argument("--single", type=int, default=8, help="sequential requests for single-stream tok/s")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-transformers-serve", action="store_true", help="chat: leave out transformers serve")
    parser.add_argument("--llama-cpp", action="store_true",
                        help="chat: also llama.cpp's llama-server on the same weights (f32, f16, the shipped Q4_1); "
                             "the first run builds it and converts the weights (bench/llamacpp.py, cached)")
    parser.add_argument("--dtype", default=None,
                        help="our server's DTYPE, or several comma-separated (float32,bfloat16,float16), each "
                             "measured in turn; the first is compared with the naive server and without speculation "
                             "(default: float32 for tiny, all three for chat)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="tiny, with several --dtype: measure them this many times, interleaved (medians reported)")
    args = parser.parse_args()
    if args.dtype is None:
        args.dtype = "float32" if args.workload == "tiny" else "float32,bfloat16,float16"
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or set(dtypes) - {"float32", "bfloat16", "float16"} or len(set(dtypes)) < len(dtypes):
        parser.error(f"--dtype: distinct values among float32, bfloat16, float16; got {args.dtype!r}")
    if args.workload == "tiny" and (args.llama_cpp or args.skip_transformers_serve):
        parser.error("--llama-cpp and --skip-transformers-serve belong to --workload chat")
    report = _chat(args, dtypes) if args.workload == "chat" else _tiny(args, dtypes)
    print(json.dumps(report, indent=2))


def _tiny(args, dtypes: list[str]) -> dict:
    """The tiny model's workload (the module docstring's first part); returns the report."""
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
    return report


if __name__ == "__main__":
    main()
