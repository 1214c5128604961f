"""Lifecycle figures on the embedded default with the tiny model, printed as JSON.

- create → running seconds; scale-from-zero wake → first token seconds; pause → resume → running seconds;
- the gateway's overhead: output tokens/s and time-to-first-token of 32 concurrent streams through the gateway vs.
  straight to the replica, measured in the same run in alternating (ABBA) rounds; the overhead is the median of the
  per-round ratios (the machine is shared and noisy: absolute tokens/s drift by 10% between runs).

Usage: .venv/bin/python bench/lifecycle.py [--streams 32] [--rounds 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.up import Stack  # noqa: E402

TOKEN = "epc_bench-lifecycle-admin-token-000000000000"
PROMPT = ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number, computed iteratively so that large "
          "values of n do not exhaust the recursion limit of the interpreter.\"\"\"\n    a, b = 0, 1\n")


# The beat's periodic scans (autoscale scrapes, idle checks, capacity) land in random rounds as CPU bursts and
# blur a 5% difference; this benchmark scales to zero and wakes explicitly, so they are slowed down here.
QUIET_BEAT = {"ENDPOINTCTL_AUTOSCALE_INTERVAL": "3600", "ENDPOINTCTL_IDLE_CHECK_INTERVAL": "3600",
              "ENDPOINTCTL_CAPACITY_INTERVAL": "3600"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_state(client: httpx.Client, name: str, state: str, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        body = client.get(f"/v2/endpoint/admin/{name}").json()
        if body["status"]["state"] == state:
            return time.monotonic() - started
        if body["status"]["state"] == "failed":
            raise RuntimeError(f"endpoint failed: {body['status']['message']}")
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not reach {state}")


async def one_stream(client: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[float, int, float]:
    started = time.monotonic()
    first = None
    tokens = 0
    body = {"model": "tgi", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text") is not None:
                tokens += 1
                if first is None:
                    first = time.monotonic() - started
    return first or float("nan"), tokens, time.monotonic() - started


async def load(url: str, streams: int, max_tokens: int) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=None, headers=headers, limits=httpx.Limits(max_connections=streams + 4)) as client:
        started = time.monotonic()
        results = await asyncio.gather(*(one_stream(client, url, max_tokens) for _ in range(streams)))
        wall = time.monotonic() - started
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"tokens_per_s": tokens / wall, "ttft_p50_s": statistics.median(ttfts),
            "ttft_p99_s": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], "tokens": tokens}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks → seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_token_seconds(url: str, timeout: float = 300) -> float:
    started = time.monotonic()
    body = {"model": "tgi", "prompt": PROMPT, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {TOKEN}", "X-Scale-Up-Timeout": str(timeout)}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                return time.monotonic() - started
    raise RuntimeError("no token received")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    from runtime.tinymodel import build_tiny_model

    model = Path.home() / ".cache" / "endpointctl" / "models" / "bench-tiny-llama"
    if not (model / "config.json").exists():
        build_tiny_model(model)
    figures: dict = {"model": "tiny llama (hidden 384, 6 layers, vocab 8192, fp32)", "streams": args.streams,
                     "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="endpointctl-bench-") as data, \
            Stack(port=free_port(), data_dir=Path(data), admin_token=TOKEN, extra_env=QUIET_BEAT) as stack:
        api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        body = {"compute": {"accelerator": "cpu", "instanceSize": "x2", "instanceType": "intel-icl",
                            "scaling": {"minReplica": 0, "maxReplica": 1, "scaleToZeroTimeout": 30}},
                "model": {"framework": "pytorch", "repository": str(model), "revision": None,
                          "image": {"huggingface": {}}, "task": "text-generation"},
                "name": "bench", "provider": {"region": "us-east-1", "vendor": "aws"}, "type": "protected"}
        started = time.monotonic()
        api.post("/v2/endpoint/admin", json=body).raise_for_status()
        wait_state(api, "bench", "running")
        figures["create_to_running_s"] = round(time.monotonic() - started, 2)
        gateway_url = api.get("/v2/endpoint/admin/bench").json()["status"]["url"]
        state_file = next((Path(data) / "local-replicas").glob("*/r*.json"))
        replica_url = f"http://127.0.0.1:{json.loads(state_file.read_text())['port']}"

        asyncio.run(load(replica_url, 4, 8))  # warm both paths
        asyncio.run(load(gateway_url, 4, 8))
        state = json.loads(state_file.read_text())
        replica_pid, gateway_pid = state["child_pid"], stack.api.proc.pid
        direct, via = [], []
        gateway_cpu = replica_cpu = 0.0
        for round_no in range(args.rounds):
            # ABBA order: whichever path runs second in a round gets a warmer replica, so the order alternates.
            for path in (("direct", "via") if round_no % 2 == 0 else ("via", "direct")):
                if path == "direct":
                    direct.append(asyncio.run(load(replica_url, args.streams, args.max_tokens)))
                    continue
                g0, r0 = cpu_seconds(gateway_pid), cpu_seconds(replica_pid)
                via.append(asyncio.run(load(gateway_url, args.streams, args.max_tokens)))
                gateway_cpu += cpu_seconds(gateway_pid) - g0
                replica_cpu += cpu_seconds(replica_pid) - r0

        def med(runs: list[dict], key: str) -> float:
            return round(statistics.median(r[key] for r in runs), 3)

        figures["direct"] = {k: med(direct, k) for k in ("tokens_per_s", "ttft_p50_s", "ttft_p99_s")}
        figures["through_gateway"] = {k: med(via, k) for k in ("tokens_per_s", "ttft_p50_s", "ttft_p99_s")}
        # Paired: each round's gateway run against the direct run beside it, so drift of the shared machine over
        # the whole benchmark cancels out; the median of those per-round ratios is the figure.
        paired = sorted(100 * (1 - v["tokens_per_s"] / d["tokens_per_s"]) for d, v in zip(direct, via, strict=True))
        figures["gateway_overhead_tokens_per_s_pct"] = round(statistics.median(paired), 1)
        figures["gateway_overhead_per_round_pct"] = [round(x, 1) for x in paired]
        # CPU the gateway process burns per unit of replica work: the overhead that noise cannot blur.
        figures["gateway_cpu_s_per_replica_cpu_s"] = round(gateway_cpu / max(replica_cpu, 1e-9), 3)
        figures["gateway_ttft_p50_added_s"] = round(
            figures["through_gateway"]["ttft_p50_s"] - figures["direct"]["ttft_p50_s"], 3)

        api.post("/v2/endpoint/admin/bench/scale-to-zero").raise_for_status()
        wait_state(api, "bench", "scaledToZero")
        time.sleep(1)
        figures["wake_to_first_token_s"] = round(first_token_seconds(gateway_url), 2)

        api.post("/v2/endpoint/admin/bench/pause").raise_for_status()
        wait_state(api, "bench", "paused")
        started = time.monotonic()
        api.post("/v2/endpoint/admin/bench/resume").raise_for_status()
        wait_state(api, "bench", "running")
        figures["resume_to_running_s"] = round(time.monotonic() - started, 2)
        figures["goals"] = {"wake_to_first_token_lt_5s": figures["wake_to_first_token_s"] < 5,
                            "gateway_overhead_lt_5pct": figures["gateway_overhead_tokens_per_s_pct"] < 5}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
