"""No input yields a 500: seeded random mutations of valid requests, raw garbage bodies and odd paths.

A deterministic fuzzer (fixed seed) rather than a property-testing dependency: it mutates the exact payload
huggingface_hub sends — dropping keys, swapping values for other JSON types, extremes and odd strings — and
sends it to every writing route. Every answer must be a 2xx/4xx with an `error` string on 4xx.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from tests.controlplane.conftest import Api, payload

ODD_VALUES: list[Any] = [None, 0, -1, 1, 2**63, -(2**63) - 1, 10**40, 1.5, -0.0, 1e308, "", " ", "x" * 5000,
                         "\x00", "a\x00b", "ü\u202e", "../..", "%00", True, False, [], [None], {},
                         {"a": {"b": {}}}, ["x"] * 50, {"huggingface": {}}, {"custom": {"url": None}}]
ROUTE_SEGMENTS = ["admin", "x", "", "A" * 300, "%00", "..", "ns%2Fname", "ü", "-", "a.b", "%20", "%ff", "0" * 64]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(rng: random.Random, body: Any) -> Any:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p in _paths(body) if p]
        if not paths:
            return rng.choice(ODD_VALUES)
        path = rng.choice(paths)
        parent = body
        for part in path[:-1]:
            parent = parent[part]
        action = rng.random()
        if action < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.3 and isinstance(parent, dict):
            parent[rng.choice(["extra", "scaling", "image", "measure", "secrets", "name"])] = rng.choice(ODD_VALUES)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return body


def _check(r) -> None:  # noqa: ANN001 - httpx.Response
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_mutated_creates_and_updates_never_500(api: Api) -> None:
    rng = random.Random(20261123)
    full = payload("base", tags=["t"], route={"domain": "d", "path": "/p"}, cacheHttpResponses=True)
    full["model"].update(env={"A": "1"}, secrets={"S": "x"}, command=["c"], args=["a"])
    full["compute"]["scaling"]["measure"] = {"pendingRequests": 1.5}
    assert api.http.post("/v2/endpoint/admin", json=full, headers=api.admin).status_code == 201
    for i in range(250):
        body = _mutate(rng, full)
        if isinstance(body, dict) and isinstance(body.get("name"), str) and body["name"] == "base":
            body["name"] = f"f{i}"
        _check(api.http.post("/v2/endpoint/admin", json=body, headers=api.admin))
        update = _mutate(rng, {k: v for k, v in full.items() if k != "name"})
        _check(api.http.put("/v2/endpoint/admin/base", json=update, headers=api.admin))
        _check(api.http.post("/api/tokens", json=_mutate(rng, {"namespace": "u1", "name": "n", "orgs": ["o"]}),
                             headers=api.admin))


def test_raw_bodies_never_500(api: Api) -> None:
    rng = random.Random(7)
    bodies = [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b"[" * 100_000, b'{"a":' * 50_000,
              b'{"name": "\\ud800"}', b"NaN", b"1e999999", b'{"name": 1e999999}', bytes(rng.randrange(256)
                                                                                        for _ in range(2000))]
    for body in bodies:
        for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
            headers = {**api.admin, "content-type": content_type}
            _check(api.http.post("/v2/endpoint/admin", content=body, headers=headers))
            _check(api.http.put("/v2/endpoint/admin/x", content=body, headers=headers))
            _check(api.http.post("/api/tokens", content=body, headers=headers))


def test_odd_paths_queries_and_headers_never_500(api: Api) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("x"), headers=api.admin)
    for ns in ROUTE_SEGMENTS:
        for name in ROUTE_SEGMENTS[:6]:
            base = f"/v2/endpoint/{ns}/{name}"
            for method, path in (("GET", base), ("DELETE", base), ("POST", base + "/pause"),
                                 ("POST", base + "/resume"), ("POST", base + "/scale-to-zero"),
                                 ("GET", base + "/events?limit=abc&before=-3"), ("GET", base + "/logs?tail=x"),
                                 ("GET", f"/v2/endpoint/{ns}?limit=99999999999999999999"),
                                 ("GET", f"/v2/provider/{ns}")):
                _check(api.http.request(method, path, headers=api.admin))
    for header in ("Bearer", "Bearer ", "Bearer " + "x" * 10_000, "bearer epc_\u00e9", "Token abc", "Bearer a b"):
        _check(api.http.get("/api/whoami-v2", headers={"authorization": header.encode("utf-8")}))
    for token_id in ("0", "-1", "abc", "1e3", str(2**70)):
        _check(api.http.delete(f"/api/tokens/{token_id}", headers=api.admin))
