"""Scale benchmark of the Kubernetes provider: N endpoints created through the API on the simulated cluster.

Prints JSON with
* seconds until all N endpoints are `running` (kwok marks pods ready; the worker reconciles through the API
  server with the real controllers and scheduler in the loop),
* API-server requests per endpoint during creation: those of endpointctl's provider (counted by its user agent
  in the API server's audit log) and of every client together (controllers, scheduler, kwok included),
* requests per minute in steady state (N idle endpoints, periodic resync running), against a baseline measured
  in the same run: one pass of the naive design that GETs each endpoint's Deployment and lists its pods, scaled
  to the same resync interval. The ratio is ours / naive.

    .venv/bin/python bench/k8s_scale.py [--endpoints 500] [--steady-seconds 90] [--backend redis-postgres]

`--backend redis-postgres` (the production set-up: PostgreSQL + Redis servers started for the run, the same
helpers the test suite uses) or `embedded` (SQLite + the SQLAlchemy broker, `endpointctl up`'s default).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.devcluster import DevCluster  # noqa: E402
from cli.up import Stack  # noqa: E402
from worker.providers.kubernetes.provider import USER_AGENT  # noqa: E402

TOKEN = "epc_k8s-scale-bench-admin-token-0123456789abcdef"
NAIVE_AGENT = "endpointctl-bench-naive-poller/0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_agent(records: list[dict]) -> collections.Counter:
    return collections.Counter(r.get("userAgent", "").split(" ")[0] for r in records)


def provider_requests(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("userAgent", "").startswith(USER_AGENT)]


def started_in_window(records: list[dict]) -> list[dict]:
    """Drop watches that began before the window (only their completion falls into it)."""
    return [r for r in records if r["verb"] != "watch" or "ResponseStarted" in r["stages"]]


def verbs(records: list[dict]) -> dict[str, int]:
    return dict(collections.Counter(f"{r['verb']} {r.get('objectRef', {}).get('resource', '?')}" for r in records))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--steady-seconds", type=float, default=90.0)
    parser.add_argument("--resync-interval", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--backend", choices=("redis-postgres", "embedded"), default="redis-postgres")
    args = parser.parse_args()
    n = args.endpoints
    with tempfile.TemporaryDirectory(prefix="k8s-scale-") as tmp:
        cluster = DevCluster(Path(tmp) / "cluster")
        # 1-CPU endpoints (intel-icl x1): 32-CPU kwok nodes hold 30 each with headroom.
        cluster.up(gpu_nodes=0, cpu_nodes=math.ceil(n / 30) + 1, audit=True, timeout=300)
        ns = "bench-endpoints"
        backend_env: dict[str, str] = {}
        servers: list = []
        if args.backend == "redis-postgres":
            from tests.fixtures.services import RedisServer, start_postgres, stop_postgres

            redis = RedisServer(free_port(), Path(tmp))
            redis.start()
            postgres = start_postgres()
            servers = [redis.stop, lambda: stop_postgres(postgres)]
            backend_env = {"DATABASE_URL": postgres.create_database(), "REDIS_URL": redis.url}
        stack = Stack(port=free_port(), data_dir=Path(tmp) / "stack", admin_token=TOKEN,
                      worker_concurrency=args.worker_concurrency,
                      extra_env={"ENDPOINTCTL_PROVIDER": "kubernetes", "KUBECONFIG": str(cluster.kubeconfig),
                                 "ENDPOINTCTL_K8S_NAMESPACE": ns,
                                 "ENDPOINTCTL_RESYNC_INTERVAL": str(args.resync_interval), **backend_env})
        try:
            stack.start()
            http = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            _, offset = cluster.audit_records()
            t0 = time.monotonic()

            def create(i: int) -> int:
                return http.post("/v2/endpoint/admin", json={
                    "name": f"bench-{i:04d}", "type": "protected", "provider": {"vendor": "aws", "region": "us-east-1"},
                    "compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1",
                                "scaling": {"minReplica": 1, "maxReplica": 1}},
                    "model": {"repository": "acme/tiny-llama", "framework": "pytorch", "task": "text-generation",
                              "image": {"huggingface": {}}}}).status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = collections.Counter(pool.map(create, range(n)))
            created_s = time.monotonic() - t0
            if codes != {201: n}:
                raise SystemExit(f"create answered {dict(codes)}")
            states: collections.Counter = collections.Counter()
            while time.monotonic() - t0 < args.timeout:
                items = http.get("/v2/endpoint/admin").json()["items"]
                states = collections.Counter(e["status"]["state"] for e in items)
                if states.get("running", 0) == n:
                    break
                time.sleep(1.0)
            all_running_s = time.monotonic() - t0
            creation, offset = cluster.audit_records(since_offset=offset)
            creation = started_in_window(creation)
            if states.get("running", 0) != n:
                raise SystemExit(f"not all running after {args.timeout}s: {dict(states)}")

            # Steady state: N idle endpoints, the periodic resync keeps reconciling them.
            time.sleep(args.steady_seconds)
            steady, offset = cluster.audit_records(since_offset=offset)
            steady = started_in_window(steady)

            # Baseline, same cluster, same run: the naive observe (GET the Deployment, LIST its pods) per endpoint.
            from kubernetes import client as k8s
            from kubernetes import config as k8s_config

            api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
            api.user_agent = NAIVE_AGENT
            apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
            deployments = [d.metadata.name for d in apps.list_namespaced_deployment(ns).items]
            tn = time.monotonic()
            for name in deployments:
                apps.read_namespaced_deployment(name, ns, _preload_content=False)
                core.list_namespaced_pod(ns, label_selector=f"endpointctl.io/endpoint={name}", _preload_content=False)
            naive_pass_s = time.monotonic() - tn
            naive, offset = cluster.audit_records(since_offset=offset)
            api.close()
        finally:
            stack.stop()
            cluster.down()
            for stop in servers:
                stop()

    ours_creation = provider_requests(creation)
    ours_steady = provider_requests(steady)
    naive_pass = [r for r in naive if r.get("userAgent", "").startswith(NAIVE_AGENT)]
    per_minute = len(ours_steady) * 60.0 / args.steady_seconds
    naive_per_minute = len(naive_pass) * 60.0 / args.resync_interval
    result = {
        "endpoints": n,
        "backend": args.backend,
        "worker_concurrency": args.worker_concurrency,
        "seconds_to_create_through_api": round(created_s, 1),
        "seconds_until_all_running": round(all_running_s, 1),
        "all_running_within_3_minutes": all_running_s <= 180.0,
        "creation": {
            "provider_requests_per_endpoint": round(len(ours_creation) / n, 2),
            "all_clients_requests_per_endpoint": round(len(creation) / n, 2),
            "provider_requests_by_verb": verbs(ours_creation),
            "requests_by_client": dict(by_agent(creation).most_common(8)),
        },
        "steady_state": {
            "window_seconds": args.steady_seconds,
            "resync_interval_seconds": args.resync_interval,
            "provider_requests_per_minute": round(per_minute, 1),
            "provider_requests_by_verb": verbs(ours_steady),
            "baseline_naive_get_per_endpoint_requests_per_minute": round(naive_per_minute, 1),
            "baseline_naive_pass_seconds": round(naive_pass_s, 2),
            "ratio_ours_to_naive": round(per_minute / naive_per_minute, 4) if naive_per_minute else None,
            # Our only recurring cost: re-opening each of the 5 watches when the server ends it (every 240 s),
            # independent of the number of endpoints; the window above may or may not contain one.
            "provider_watch_renewals_per_minute_by_design": round(5 * 60 / 240, 2),
            "all_clients_requests_per_minute": round(len(steady) * 60.0 / args.steady_seconds, 1),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
