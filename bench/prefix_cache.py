"""The runtime's memory model on the real model (SmolLM2-135M-Instruct, fp32, CPU): prefix caching, paging's cost,
and memory under a pool too small for the load. Every ratio is measured within one run, servers one at a time.

Workloads (prompts sent as token ids to the streamed ``/v1/completions``, greedy, ``ignore_eos``):

* ``shared``: 32 clients, 64 requests (``--shared-requests``), each a ~1,000-token system prompt (text of the standard library's
  ``argparse.py``) followed by a distinct ~20-token question, 32 new tokens. One request with the system prompt
  goes first (the prompt is already in use when the measured traffic arrives, as in production). Ours with the
  prefix cache against ours with ``PREFIX_CACHING=0``: TTFT p50 and output tokens/s. Goals: TTFT p50 >= 5x lower,
  tokens/s >= 1.5x.
* ``multi_turn``: one client, a ~1,000-token system prompt and 8 turns, each resending the whole history (earlier
  questions and the answers, re-tokenized) plus a new question, 32 new tokens per answer: TTFT of each turn, with
  and without the cache. Goal: turn-8 TTFT within 2x of turn 2's with the cache.
* ``no_sharing``: 32 clients, 64 distinct 64-80-token prompts, 64 new tokens: output tokens/s of this checkout
  against the runtime of ``--baseline`` (default: the commit before paging, checked out into a temporary git
  worktree), in ``--rounds`` interleaved rounds (medians). Goal: within 5%.
* ``memory``: 64 clients each with a distinct 4,000-token prompt (``--memory-prompt-tokens``) and 16 new tokens, on a server whose pool
  (MAX_BATCH_TOTAL_TOKENS) holds a quarter of them at full length: every request must complete, none fail; the
  server's peak resident memory while serving (VmHWM, reset once it is ready) against weights + pool. Goal: within
  10%.

Usage: ``python bench/prefix_cache.py [--baseline <commit>] [--rounds 2] [--skip memory,...]``; prints one JSON
object (progress on stderr). Other work on the machine moves absolute figures; the ratios are back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runtime_throughput import _free_port, _load, _metric, _one, _prompts, _rss_mib, _server, _session  # noqa: E402

BASELINE = "68d7d63"
"""The last commit before the paged KV cache (issue 21)."""


def _log(message: str) -> None:
    print(f"[prefix_cache] {message}", file=sys.stderr, flush=True)


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _text_ids(tok) -> list[int]:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    return tok(text, add_special_tokens=False).input_ids


def _ours(model_dir: Path, *, env: dict[str, str] | None = None, root: Path = REPO):
    """Our server from checkout ``root`` (this one, or a worktree of the baseline)."""
    port = _free_port()
    launch = f"import sys, runpy; sys.path.insert(0, {str(root)!r}); runpy.run_module('runtime', run_name='__main__')"
    env = {"MODEL_ID": str(model_dir), "PORT": str(port), "HOSTNAME": "127.0.0.1", "PYTHONPATH": str(root),
           **(env or {})}
    return _server([sys.executable, "-c", launch], env, port)


def _reset_peak(pid: int) -> None:
    """Reset the process's VmHWM (Linux: ``5`` to /proc/PID/clear_refs): the peak from here on, not the load's."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _scrape(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics", timeout=10).text


def _hit_rate(before: str, after: str) -> float | None:
    queries = _metric(after, "vllm:prefix_cache_queries_total") - _metric(before, "vllm:prefix_cache_queries_total")
    hits = _metric(after, "vllm:prefix_cache_hits_total") - _metric(before, "vllm:prefix_cache_hits_total")
    return round(hits / queries, 3) if queries == queries and queries else None


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "texts"}


def shared(model_dir: Path, tok, args) -> dict:
    ids = _text_ids(tok)
    system = [tok.bos_token_id or 0, *ids[:999]]
    questions = [ids[2000 + 40 * i:2000 + 40 * i + 20] for i in range(args.shared_requests + 1)]
    prompts = [system + q for q in questions]
    out = {}
    for name, env in (("cache", {}), ("no_cache", {"PREFIX_CACHING": "0"})):
        _log(f"shared system prompt: {name}")
        with _ours(model_dir, env=env) as (url, _pid):
            asyncio.run(_warm(url, prompts[0]))
            before = _scrape(url)
            run = asyncio.run(_load(url, prompts[1:], clients=args.clients, max_tokens=32))
            out[name] = {**_strip(run), "prefix_cache_hit_rate": _hit_rate(before, _scrape(url))}
            out[name]["_texts"] = run["texts"]
    same = out["cache"].pop("_texts") == out["no_cache"].pop("_texts")
    ttft = out["no_cache"]["ttft_p50_s"] / out["cache"]["ttft_p50_s"]
    tps = out["cache"]["tokens_per_s"] / out["no_cache"]["tokens_per_s"]
    return {**out, "same_texts": same, "ttft_p50_ratio": round(ttft, 2), "tokens_per_s_ratio": round(tps, 2),
            "goals": {"ttft_p50_5x_lower": ttft >= 5, "tokens_per_s_1_5x": tps >= 1.5}}


async def _warm(url: str, prompt: list[int]) -> None:
    async with _session(2) as session:
        await _one(session, url, prompt, 4)


async def _conversation(url: str, tok, system: list[int], questions: list[list[int]]) -> list[float]:
    history = list(system)
    ttfts = []
    async with _session(2) as session:
        for question in questions:
            prompt = history + question
            result = await _one(session, url, prompt, 32)
            ttfts.append(round(result["arrivals"][0] - result["start"], 4))
            history = prompt + tok(result["text"], add_special_tokens=False).input_ids
    return ttfts


def multi_turn(model_dir: Path, tok, args) -> dict:
    ids = _text_ids(tok)
    system = [tok.bos_token_id or 0, *ids[5000:5999]]
    questions = [ids[9000 + 50 * i:9000 + 50 * i + 24] for i in range(8)]
    out = {}
    for name, env in (("cache", {}), ("no_cache", {"PREFIX_CACHING": "0"})):
        _log(f"multi-turn: {name}")
        with _ours(model_dir, env=env) as (url, _pid):
            asyncio.run(_warm(url, ids[100:140]))  # one-time costs, nothing shared with the conversation
            ttfts = asyncio.run(_conversation(url, tok, system, questions))
        out[name] = {"ttft_by_turn_s": ttfts, "turn8_over_turn2": round(ttfts[7] / ttfts[1], 2)}
    return {**out, "goals": {"turn8_within_2x_of_turn2": out["cache"]["turn8_over_turn2"] <= 2}}


def _baseline_worktree(commit: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="endpointctl-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True,
                   capture_output=True)
    return path


def no_sharing(model_dir: Path, tok, args) -> dict:
    prompts = _prompts(model_dir, args.requests)
    worktree = _baseline_worktree(args.baseline)
    rates: dict[str, list[float]] = {"paged": [], "baseline": []}
    texts: dict[str, list[str]] = {}
    try:
        for round_ in range(args.rounds):
            for name, root in (("paged", REPO), ("baseline", worktree)):
                _log(f"no sharing: {name}, round {round_ + 1}/{args.rounds}")
                with _ours(model_dir, root=root) as (url, _pid):
                    asyncio.run(_warm(url, prompts[0]))
                    run = asyncio.run(_load(url, prompts, clients=args.clients, max_tokens=64))
                rates[name].append(run["tokens_per_s"])
                texts[name] = run["texts"]
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    paged, base = statistics.median(rates["paged"]), statistics.median(rates["baseline"])
    return {"baseline_commit": args.baseline, "tokens_per_s": rates, "median_ratio": round(paged / base, 3),
            "same_texts": texts["paged"] == texts["baseline"], "goals": {"within_5_percent": paged / base >= 0.95}}


def _weights_bytes(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for name in f.keys():
            n = 1
            for d in f.get_slice(name).get_shape():
                n *= d
            total += n * 4  # fp32 on CPU
    return total


def memory(model_dir: Path, tok, args) -> dict:
    import httpx

    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim * 4
    ids = _text_ids(tok)
    clients, length, new = 64, args.memory_prompt_tokens, 16
    prompts = [[tok.bos_token_id or 0, *(ids[(i * 997) % (len(ids) - length):][:length - 2]), 100 + i]
               for i in range(clients)]
    pool_tokens = clients // 4 * (length + new)
    _log(f"memory: {clients} x {length} tokens on a pool of {pool_tokens}")
    with _ours(model_dir, env={"MAX_BATCH_TOTAL_TOKENS": str(pool_tokens)}) as (url, pid):
        info = httpx.get(f"{url}/info", timeout=10).json()
        _reset_peak(pid)
        idle = _rss_mib(pid)
        before = _scrape(url)
        t0 = time.perf_counter()
        failures = 0
        try:
            run = asyncio.run(_load(url, prompts, clients=clients, max_tokens=new, timeout=7200))
        except RuntimeError as exc:  # a request answered with an error
            _log(f"memory: a request failed: {exc}")
            failures += 1
            run = {"output_tokens": 0, "texts": []}
        after = _scrape(url)
        peak = _rss_mib(pid, "VmHWM")
    weights = _weights_bytes(model_dir)
    pool = (info["max_batch_total_tokens"] + 16) * per_token  # + the reserved null block
    budget_mib = (weights + pool) / 2**20
    completed = sum(1 for t in run["texts"] if t)
    libraries = _libraries_rss_mib()
    return {
        "requests": clients, "prompt_tokens": length, "completed": completed, "failed": failures,
        "output_tokens": run["output_tokens"], "wall_s": round(time.perf_counter() - t0, 1),
        "pool_tokens": info["max_batch_total_tokens"], "preemptions": int(_metric(after, "vllm:num_preemptions_total")
                                                                          - _metric(before, "vllm:num_preemptions_total")),
        "weights_mib": round(weights / 2**20), "pool_mib": round(pool / 2**20), "idle_rss_mib": idle,
        "peak_rss_mib": peak, "peak_over_weights_plus_pool": round(peak / budget_mib, 3),
        "libraries_rss_mib": libraries, "peak_less_libraries_mib": peak - libraries,
        "peak_less_libraries_over_weights_plus_pool": round((peak - libraries) / budget_mib, 3),
        "goals": {"all_complete": completed == clients and failures == 0,
                  "peak_within_10_percent": peak <= 1.1 * budget_mib,
                  "peak_less_libraries_within_10_percent": peak - libraries <= 1.1 * budget_mib},
    }


def _libraries_rss_mib() -> int:
    """Resident memory of a process that has imported what the runtime imports (Python, PyTorch, transformers, the
    runtime's own modules) and loaded nothing: the constant a server pays before any weight or cache. It is the
    library's, not the model's: a CUDA build of PyTorch alone is some 500 MiB resident once imported."""
    code = ("import runtime.launch, runtime.app, runtime.engine.loader, runtime.engine.model, runtime.engine.scheduler;"
            "print(next(int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmRSS:')))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True, timeout=300)
    return int(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="no_sharing's requests")
    parser.add_argument("--shared-requests", type=int, default=64, help="shared's requests (after the first)")
    parser.add_argument("--memory-prompt-tokens", type=int, default=4000,
                        help="memory's prompt length (64 of them; 4,000 is ~256k prefill tokens: long on 2 cores)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--skip", default="", help="comma-separated workloads to leave out")
    args = parser.parse_args()
    from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_model

    model_dir = cached_model(SMOLLM2_135M_INSTRUCT.name)
    tok = _tokenizer(model_dir)
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"model": "SmolLM2-135M-Instruct", "dtype": "float32", "device": "cpu"}
    for name, fn in (("shared", shared), ("multi_turn", multi_turn), ("no_sharing", no_sharing),
                     ("memory", memory)):
        if name not in skip:
            report[name] = fn(model_dir, tok, args)
            _log(f"{name}: {json.dumps(report[name])}")  # each workload's figures as soon as they exist
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
