"""Prefix-aware routing against least-outstanding alone: two replicas of the real model behind the real gateway,
printed as JSON.

Workload (issue 21's routing figure): `--system-prompts` (4) distinct system prompts of about `--system-tokens`
(1,000) tokens each, every request one of them plus a distinct short question, `--requests` (64) chat completions
from `--clients` (16) concurrent clients in a seeded random order, `--max-tokens` (8) greedy tokens each. The same
workload runs twice, each time on a fresh embedded stack (`cli.up.Stack`: API with its gateway, worker, beat) with
one endpoint of two local replicas of SmolLM2-135M-Instruct (cold prefix caches): once with the gateway's prefix-
aware routing (`ENDPOINTCTL_GATEWAY_PREFIX_ROUTING=true`, the default), once with least-outstanding alone.

Per mode it prints:
- `prefix_cache_hit_rate`: prompt tokens the replicas found in their prefix caches over prompt tokens looked up,
  summed over both replicas from their Prometheus counters (`vllm:prefix_cache_hits_total` /
  `vllm:prefix_cache_queries_total`); None when the runtime does not export them;
- `cached_prompt_tokens_rate`: the same from the responses (`usage.prompt_tokens_details.cached_tokens` over
  `usage.prompt_tokens`), None when the runtime does not report it;
- `routing_warm_rate`: the routing quality itself, independent of any cache: the share of requests the gateway sent
  to a replica it had sent the same prompt start before (`endpointctl_gateway_prefix_routed_total{warm}`);
- latency p50/p99 of the whole request, requests per replica, failures.
`goal` compares prefix-aware routing's hit rate (the cache's when exported, else the routing quality) with 0.85.

Reading it: when each replica's KV pool holds every system prompt, least-outstanding also reaches a high hit rate
(each replica misses each prompt once); the difference shows when prompts outnumber what a pool holds
(`--system-prompts 8 --replica-env MAX_BATCH_TOTAL_TOKENS=8192`), where least-outstanding makes every replica cache
every prompt and evict them in turn.

Usage: .venv/bin/python bench/prefix_routing.py [--requests 64] [--clients 16] [--replica-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.up import Stack  # noqa: E402
from worker.providers.local import free_port  # noqa: E402

TOKEN = "epc_bench-prefix-routing-admin-token-0000000"
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
QUIET_BEAT = {"ENDPOINTCTL_AUTOSCALE_INTERVAL": "3600", "ENDPOINTCTL_IDLE_CHECK_INTERVAL": "3600",
              "ENDPOINTCTL_CAPACITY_INTERVAL": "3600"}
TOPICS = ["astronomy", "cooking", "tax law", "gardening", "railways", "chess", "medieval history", "sailing"]
FACTS = ["Answer in plain words.", "Prefer short sentences.", "Name your sources when you know them.",
         "Say so when you are unsure.", "Use metric units.", "Give one example for each claim.",
         "Never invent numbers.", "Keep lists to five items.", "Define each technical term once.",
         "Do not repeat the question."]


def system_prompt(index: int, tokens: int, rng: random.Random) -> str:
    """A distinct system prompt of roughly `tokens` tokens (about four characters per token for English text)."""
    topic = TOPICS[index % len(TOPICS)]
    lines = [f"You are assistant {index}, an expert on {topic}, answering the public's questions about {topic}."]
    while sum(len(line) for line in lines) < tokens * 4:
        lines.append(f"Rule {len(lines)} for {topic}: {rng.choice(FACTS)} {rng.choice(FACTS)}")
    return "\n".join(lines)


def workload(args) -> tuple[list[str], list[tuple[int, str]]]:
    rng = random.Random(args.seed)
    systems = [system_prompt(i, args.system_tokens, rng) for i in range(args.system_prompts)]
    order = [(i % args.system_prompts, f"Question {i}: what is {rng.randint(2, 99)} times {rng.randint(2, 99)}?")
             for i in range(args.requests)]
    rng.shuffle(order)
    return systems, order


def metric_sum(text: str, name: str, match: str = "") -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if (line.startswith(name + " ") or line.startswith(name + "{")) and match in line]
    return sum(values) if values else None


def wait_state(api: httpx.Client, name: str, state: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/v2/endpoint/admin/{name}").json()
        if body["status"]["state"] == state and body["status"].get("readyReplica", 0) >= 2:
            return body
        if body["status"]["state"] == "failed":
            raise RuntimeError(f"endpoint failed: {body['status']['message']}")
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not reach {state} with 2 ready replicas")


async def run_load(url: str, systems: list[str], order: list[tuple[int, str]], args) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for item in order:
        queue.put_nowait(item)
    latencies: list[float] = []
    prompt_tokens = cached_tokens = 0
    cached_reported = False
    failures: list[str] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal prompt_tokens, cached_tokens, cached_reported
        while not queue.empty():
            system, question = queue.get_nowait()
            body = {"model": "tgi", "max_tokens": args.max_tokens, "temperature": 0,
                    "messages": [{"role": "system", "content": systems[system]},
                                 {"role": "user", "content": question}]}
            started = time.monotonic()
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
                continue
            latencies.append(time.monotonic() - started)
            usage = response.json().get("usage") or {}
            prompt_tokens += usage.get("prompt_tokens", 0)
            details = usage.get("prompt_tokens_details") or {}
            if "cached_tokens" in details:
                cached_reported = True
                cached_tokens += details["cached_tokens"] or 0

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=600, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(args.clients)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {"elapsed_s": round(elapsed, 2), "completed": len(latencies), "failed": len(failures),
            "failures": failures[:5],
            "latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
            "latency_p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3) if ordered else None,
            "cached_prompt_tokens_rate": round(cached_tokens / prompt_tokens, 4)
            if cached_reported and prompt_tokens else None,
            "prompt_tokens": prompt_tokens}


def one_mode(args, model: Path, prefix_routing: bool) -> dict:
    systems, order = workload(args)
    env = {**QUIET_BEAT, "ENDPOINTCTL_GATEWAY_PREFIX_ROUTING": "true" if prefix_routing else "false",
           "ENDPOINTCTL_GATEWAY_PREFIX_LOAD_FACTOR": str(args.load_factor)}
    replica_env = {"MAX_INPUT_TOKENS": str(args.system_tokens * 2), "MAX_TOTAL_TOKENS": str(args.system_tokens * 2
                                                                                             + args.max_tokens)}
    replica_env.update(dict(item.split("=", 1) for item in args.replica_env))
    with tempfile.TemporaryDirectory(prefix="endpointctl-bench-routing-") as data, \
            Stack(port=free_port(), data_dir=Path(data), admin_token=TOKEN, extra_env=env) as stack:
        api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        body = {"compute": {"accelerator": "cpu", "instanceSize": "x1", "instanceType": "intel-icl",
                            "scaling": {"minReplica": 2, "maxReplica": 2, "scaleToZeroTimeout": None}},
                "model": {"framework": "pytorch", "repository": str(model), "revision": None,
                          "image": {"huggingface": {}}, "task": "text-generation", "env": replica_env},
                "name": "routing", "provider": {"region": "us-east-1", "vendor": "aws"}, "type": "protected"}
        api.post("/v2/endpoint/admin", json=body).raise_for_status()
        url = wait_state(api, "routing", "running")["status"]["url"]
        replicas = [f"http://127.0.0.1:{json.loads(f.read_text())['port']}"
                    for f in sorted((Path(data) / "local-replicas").glob("*-routing/r*.json"))]

        def replica_metrics() -> list[str]:
            return [httpx.get(f"{r}/metrics", timeout=30).text for r in replicas]

        before = replica_metrics()
        result = asyncio.run(run_load(url, systems, order, args))
        after = replica_metrics()
        gateway = api.get("/metrics").text
        api.close()

    def delta(name: str) -> float | None:
        values = [(metric_sum(a, name), metric_sum(b, name)) for a, b in zip(after, before)]
        if any(a is None for a, _ in values):
            return None
        return sum(a - (b or 0.0) for a, b in values)

    hits, queries = delta(HITS), delta(QUERIES)
    warm = metric_sum(gateway, "endpointctl_gateway_prefix_routed_total", 'warm="true"') or 0.0
    cold = metric_sum(gateway, "endpointctl_gateway_prefix_routed_total", 'warm="false"') or 0.0
    per_replica = [metric_sum(a, "tgi_request_count_total") - (metric_sum(b, "tgi_request_count_total") or 0.0)
                   for a, b in zip(after, before)]
    return {"prefix_cache_hit_rate": round(hits / queries, 4) if hits is not None and queries else None,
            "prefix_cache_hit_tokens": hits, "prefix_cache_query_tokens": queries,
            **{k: result[k] for k in ("cached_prompt_tokens_rate",)},
            "routing_warm_rate": round(warm / (warm + cold), 4) if warm + cold else None,
            "requests_per_replica": per_replica,
            **{k: v for k, v in result.items() if k != "cached_prompt_tokens_rate"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--system-prompts", type=int, default=4)
    parser.add_argument("--system-tokens", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the cached SmolLM2)")
    parser.add_argument("--replica-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of each replica (e.g. MAX_BATCH_TOTAL_TOKENS to size its KV pool)")
    parser.add_argument("--modes", default="prefix,least_outstanding")
    parser.add_argument("--load-factor", type=float, default=1.5,
                        help="the gateway's ENDPOINTCTL_GATEWAY_PREFIX_LOAD_FACTOR (how far over the average in-flight "
                             "count a prefix's replica may go before requests spill)")
    args = parser.parse_args()
    for item in args.replica_env:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", item):
            parser.error(f"--replica-env takes KEY=VALUE, got {item!r}")
    if args.model is None:
        from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_model

        args.model = cached_model(SMOLLM2_135M_INSTRUCT.name)
    figures: dict = {"workload": {"model": args.model.name, "replicas": 2, "requests": args.requests,
                                  "clients": args.clients, "system_prompts": args.system_prompts,
                                  "system_tokens_approx": args.system_tokens, "max_tokens": args.max_tokens,
                                  "replica_env": args.replica_env, "load_factor": args.load_factor,
                                  "seed": args.seed}}
    for mode in args.modes.split(","):
        figures[mode] = one_mode(args, args.model, prefix_routing=mode == "prefix")
    prefix = figures.get("prefix")
    if prefix is not None:
        rate = prefix["prefix_cache_hit_rate"]
        figures["goal"] = {"measure": "prefix_cache_hit_rate" if rate is not None else "routing_warm_rate",
                           "target": 0.85}
        figures["goal"]["met"] = (rate if rate is not None else prefix["routing_warm_rate"] or 0.0) >= 0.85
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
