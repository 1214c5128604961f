"""Control-plane read latency with 1,000 endpoints stored, on SQLite and on PostgreSQL, beside a trivial route.

    nice -n 10 .venv/bin/python bench/controlplane_api.py [--endpoints 1000] [--pollers 32] [--requests 3000]

For each backend: a fresh database (SQLite file; PostgreSQL started like the test fixture does) is migrated and
seeded through the service layer with N endpoints in one namespace, then `python -m controlplane` serves it and
32 concurrent pollers (one asyncio client process) measure
- `GET /v2/endpoint/{ns}/{name}` (random names),
- `GET /v2/endpoint/{ns}?limit=50` (a page) and `GET /v2/endpoint/{ns}` (all N, what huggingface_hub asks for),
each beside a trivial FastAPI route served by an identical uvicorn process in the same run (the machine's
ceiling). Prints one JSON document; the goal is single-GET p99 within 3x of the trivial route's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN = "bench-admin-token"


def trivial_app():  # noqa: ANN201 - a FastAPI app
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    return app


def _free_port() -> int:
    from tests.fixtures.services import free_port

    return free_port()


def _serve(argv: list[str], env: dict[str, str], ready_path: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([*argv, "--port", str(port)], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def _poll(url: str, paths: list[str], *, pollers: int, total: int, headers: dict[str, str]) -> dict:
    """`total` GETs of random `paths` by `pollers` concurrent clients; raw latencies, errors and elapsed time."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            for _ in counter:
                start = time.perf_counter()
                try:
                    r = await client.get(rng.choice(paths))
                    await r.aread()
                except httpx.TransportError:
                    # Counted, not fatal: uvicorn may close a keep-alive connection the client just picked.
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors += 1

        # Warm-up (connections, caches), not measured.
        await asyncio.gather(*(client.get(paths[i % len(paths)]) for i in range(pollers)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(pollers)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def _summary(runs: list[dict]) -> dict:
    latencies = sorted(x for run in runs for x in run["latencies"])
    elapsed = sum(run["elapsed"] for run in runs)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "errors": sum(run["errors"] for run in runs),
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2), "rps": round(len(latencies) / elapsed, 1)}


def _seed(database_url: str, data_dir: Path, n: int) -> str:
    """Migrate and store n endpoints through the service layer; returns a user token for namespace `bench`."""
    from controlplane import migrate
    from controlplane.auth import Principal
    from common.catalog import load_catalog
    from common.config import Settings
    from common.db import dispose_engines, session_factory
    from controlplane.schemas import EndpointCreate
    from controlplane.services.endpoints import EndpointService
    from controlplane.services.tokens import TokenService

    # Its endpoints ask for GPU instance types, which the local provider refuses on a machine without one.
    settings = Settings(data_dir=data_dir, database_url=database_url, admin_token=ADMIN, local_gpu_emulation=True)
    migrate.upgrade(settings)
    admin = Principal(name="admin", is_admin=True)
    catalog = load_catalog(None)
    with session_factory(settings)() as session:
        _, raw = TokenService(session, admin).mint(namespace="bench", name="bench", orgs=None)
        service = EndpointService(session, Principal(name="bench"), catalog, lambda _id: True)
        for i in range(n):
            service.create("bench", EndpointCreate.model_validate({
                "name": f"ep-{i:04d}", "type": "authenticated",
                "compute": {"accelerator": "gpu", "instanceType": "nvidia-l4", "instanceSize": "x1",
                            "scaling": {"minReplica": 0, "maxReplica": 2, "scaleToZeroTimeout": 15}},
                "model": {"repository": f"org/model-{i}", "framework": "pytorch", "task": "text-generation",
                          "image": {"vLLM": {"url": "vllm/vllm-openai:v0.23.0", "port": 8000}},
                          "env": {"MAX_MODEL_LEN": "4096"}, "secrets": {"HF_TOKEN": "hf_x"}},
                "provider": {"vendor": "aws", "region": "us-east-1"}, "tags": ["bench"]}))
    dispose_engines()
    return raw


def run_backend(name: str, database_url: str, data_dir: Path, args: argparse.Namespace) -> dict:
    seed_start = time.perf_counter()
    token = _seed(database_url, data_dir, args.endpoints)
    seeded_s = time.perf_counter() - seed_start
    env = {"DATABASE_URL": database_url, "ENDPOINTCTL_DATA_DIR": str(data_dir), "ENDPOINTCTL_ADMIN_TOKEN": ADMIN,
           "ENDPOINTCTL_MIGRATE_ON_START": "false"}
    headers = {"authorization": f"Bearer {token}"}
    names = [f"/v2/endpoint/bench/ep-{i:04d}" for i in range(args.endpoints)]
    out: dict = {"seed_seconds": round(seeded_s, 2)}

    # Both servers run side by side and the measurements alternate in rounds, so a change in the machine's load
    # (it is shared) hits the baseline and the API alike.
    trivial, trivial_url = _serve([sys.executable, str(Path(__file__)), "--trivial-server"], {}, "/ping")
    api, api_url = _serve([sys.executable, "-m", "controlplane", "--host", "127.0.0.1", "--log-level", "warning"],
                          env, "/readyz")
    pages = [f"/v2/endpoint/bench?limit=50&offset={o}" for o in range(0, args.endpoints, 50)]
    plan = {"trivial_route": (trivial_url, ["/ping"], args.requests),
            "get_endpoint": (api_url, names, args.requests),
            "list_page_50": (api_url, pages, max(args.requests // 3, args.pollers)),
            "list_all": (api_url, ["/v2/endpoint/bench"], max(args.requests // 15, args.pollers))}
    runs: dict[str, list[dict]] = {key: [] for key in plan}
    try:
        for _ in range(args.rounds):
            for key, (url, paths, total) in plan.items():
                runs[key].append(asyncio.run(_poll(url, paths, pollers=args.pollers,
                                                   total=max(total // args.rounds, args.pollers), headers=headers)))
        for key in plan:
            out[key] = _summary(runs[key])
        out["list_all"]["body_bytes"] = len(httpx.get(api_url + "/v2/endpoint/bench", headers=headers).content)
    finally:
        _stop(api)
        _stop(trivial)
    base = out["trivial_route"]
    for key in ("get_endpoint", "list_page_50", "list_all"):
        out[key]["p50_vs_trivial"] = round(out[key]["p50_ms"] / base["p50_ms"], 2)
        out[key]["p99_vs_trivial"] = round(out[key]["p99_ms"] / base["p99_ms"], 2)
    out["goal_get_p99_within_3x_trivial"] = out["get_endpoint"]["p99_vs_trivial"] <= 3.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000, help="single-GET requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--trivial-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trivial_server:
        import uvicorn

        uvicorn.run(trivial_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return 0

    from tests.fixtures.services import start_postgres, stop_postgres

    result: dict = {"benchmark": "controlplane_api", "endpoints_stored": args.endpoints, "pollers": args.pollers,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="endpointctl-bench-") as tmp:
        for backend in args.backends.split(","):
            data_dir = Path(tmp) / backend
            data_dir.mkdir()
            if backend == "sqlite":
                result["backends"]["sqlite"] = run_backend("sqlite", f"sqlite:///{data_dir / 'cp.db'}", data_dir, args)
            elif backend == "postgres":
                server = start_postgres()
                try:
                    url = server.create_database("bench")
                    result["backends"]["postgres"] = run_backend("postgres", url, data_dir, args)
                finally:
                    stop_postgres(server)
            else:
                parser.error(f"unknown backend {backend!r}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
