"""Parallel creates against a live server: distinct names all succeed, one name yields exactly one 201."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.controlplane.conftest import LiveServer, payload, reconcile_ids


@pytest.mark.slow
def test_50_parallel_creates_of_distinct_names(live_server: LiveServer) -> None:
    headers = live_server.headers()
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=120,
                      limits=httpx.Limits(max_connections=50)) as client:
        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda i: client.post("/v2/endpoint/admin", json=payload(f"p{i}")).status_code,
                                  range(50)))
        assert codes == [201] * 50
        names = {e["name"] for e in client.get("/v2/endpoint/admin").json()["items"]}
    assert names == {f"p{i}" for i in range(50)}
    ids = reconcile_ids(live_server.redis_url)
    assert len(ids) == 50 and len(set(ids)) == 50


@pytest.mark.slow
def test_10_parallel_creates_of_one_name_give_exactly_one_201(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, headers=live_server.headers(), timeout=120) as client:
        with ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(pool.map(lambda _: client.post("/v2/endpoint/admin", json=payload("same")), range(10)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [409] * 9, [r.text for r in responses]
        assert all("already exists" in r.json()["error"] for r in responses if r.status_code == 409)
        assert [e["name"] for e in client.get("/v2/endpoint/admin").json()["items"]] == ["same"]
    assert len(reconcile_ids(live_server.redis_url)) == 1


@pytest.mark.slow
def test_parallel_writes_each_get_their_own_generation(live_server: LiveServer) -> None:
    """Otherwise the worker could mark a generation observed while a later write's spec was never reconciled."""
    with httpx.Client(base_url=live_server.url, headers=live_server.headers(), timeout=120) as client:
        assert client.post("/v2/endpoint/admin", json=payload("g")).status_code == 201
        with ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(lambda i: client.put("/v2/endpoint/admin/g", json={"tags": [f"t{i}"]}).status_code,
                                  range(10)))
            codes += list(pool.map(lambda i: client.post(f"/v2/endpoint/admin/g/{'pause' if i % 2 else 'resume'}")
                                   .status_code, range(10)))
        assert codes == [200] * 20
        assert client.get("/v2/endpoint/admin/g").json()["status"]["generation"] == 1 + 20
        events = client.get("/v2/endpoint/admin/g/events?limit=100").json()["items"]
    assert len(events) == 21
    assert len(reconcile_ids(live_server.redis_url)) == 21
