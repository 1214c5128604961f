"""The charts' history end to end: real traffic through the gateway of a real stack (`cli.up.Stack`: API, worker
and beat as processes, a tiny-model replica) shows up as non-zero series on the metrics route; retention prunes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body, make_stack  # noqa: F401 - fixture
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.slow]

CHAT = {"model": "tgi", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}


def test_traffic_becomes_series(make_stack, tiny_model_dir):
    stack = make_stack(ENDPOINTCTL_METRICS_INTERVAL="1", ENDPOINTCTL_METRICS_RETENTION="60")
    api = Api(stack.url)
    assert api.http.post("/v2/endpoint/admin", json=create_body("charted", str(tiny_model_dir))).status_code == 201
    api.wait_state("charted", "running", timeout=240)
    gateway = f"{stack.url}/endpoints/admin/charted/v1/chat/completions"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def busy_series() -> dict | None:
        for _ in range(3):
            assert httpx.post(gateway, json=CHAT, headers=headers, timeout=60).status_code == 200
        series = api.http.get("/v2/endpoint/admin/charted/metrics", params={"window": 300}).json()["series"]
        loaded = [i for i, rate in enumerate(series["requestsPerSecond"]) if rate]
        return series if loaded and any(series["ttftP50"][i] for i in loaded) else None

    series = wait_until(busy_series, timeout=60, what="traffic to show in the metrics series")
    assert any(v and v > 0 for v in series["outputTokensPerSecond"])
    assert any(v and v > 0 for v in series["latencyP95"])
    assert series["readyReplicas"][-1] == 1 and series["targetReplicas"][-1] == 1
    assert any(v is not None for v in series["pendingRequests"])  # read from the replica's gauges

    # Retention: a sample older than ENDPOINTCTL_METRICS_RETENTION is gone after the next pass.
    old = (datetime.now(UTC) - timedelta(seconds=600)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(stack.data_dir / "endpointctl.db") as db:
        endpoint_id = db.execute("select id from endpoints where name='charted'").fetchone()[0]
        db.execute("insert into endpoint_metric_samples (endpoint_id, at, ready_replicas, target_replicas, counters) "
                   "values (?, ?, 0, 0, '{}')", (endpoint_id, old))

    def pruned() -> bool:
        with sqlite3.connect(stack.data_dir / "endpointctl.db") as db:
            oldest = db.execute("select min(at) from endpoint_metric_samples").fetchone()[0]
            return oldest is not None and oldest > old

    wait_until(pruned, timeout=30, what="the old sample to be pruned")
    with sqlite3.connect(stack.data_dir / "endpointctl.db") as db:
        rows = db.execute("select count(*) from endpoint_metric_samples").fetchone()[0]
    assert rows <= 70  # bounded: about one row a second for the 60 s retention
