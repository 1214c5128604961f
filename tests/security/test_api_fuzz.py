"""Property-based fuzzing of the control-plane API over real HTTP (a `python -m controlplane` process on SQLite and
PostgreSQL): every operation of its OpenAPI spec, with hostile path segments, headers and bodies. No answer may be
a 5xx or a dropped connection, error bodies are JSON with an `error`, and the server is healthy afterwards.

Bounded in examples (deterministic: `derandomize`), so CI sees the same cases every run. Bodies stay small here:
a server that answers before reading a large body (a 401 or a bad path parameter) closes the socket with the body
unread and the kernel resets the connection, which is TCP, not the app; large bodies are tested in
test_api_input.py and the gateway's tests.
"""

from __future__ import annotations

import json
import sys
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.controlplane.conftest import ADMIN_TOKEN, LiveServer, payload
from tests.security.rawhttp import raw_request

EXAMPLES = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), st.text(max_size=40),
                      st.sampled_from(["\ud800", "\x00", "a\nb", "../../etc/passwd", "%0d%0a", "é" * 300,
                                       "x" * 8_000, "LD_PRELOAD", "--hostname"]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
segment = st.one_of(st.text(max_size=40), st.binary(max_size=20).map(lambda b: urllib.parse.quote(b, safe="")),
                    st.sampled_from(["admin", "alice", "e1", "%0A", "b%D0%BEb", "tiny%0D%0A", "..", "%ff", "a" * 300]))


def _paths(server: LiveServer) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return sorted((method, path) for path, ops in spec["paths"].items() for method in ops)


def _mutated_payload(draw: st.DrawFn) -> object:
    """A valid create body with one leaf (at any depth) replaced by hostile JSON: the validator's real paths."""
    body = payload(draw(st.sampled_from(["e1", "fz", "x" * 40])))
    body["model"]["env"] = {"MAX_INPUT_TOKENS": "512"}
    node: object = body
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], (dict, list)) or draw(st.booleans()):
                node[key] = draw(json_value)
                return body
            node = node[key]
    if isinstance(node, dict):
        node[draw(st.text(max_size=12))] = draw(json_value)
    return body


@st.composite
def requests(draw: st.DrawFn, operations: list[tuple[str, str]]) -> tuple[str, str, dict, bytes | None]:
    method, template = draw(st.sampled_from(operations))
    path = template
    for name in ("namespace", "name", "token_id"):
        path = path.replace("{" + name + "}", draw(segment).replace("/", "%2F") or "x")
    headers = {"authorization": draw(st.sampled_from([f"Bearer {ADMIN_TOKEN}", "Bearer epc_" + "A" * 43, "",
                                                      "Basic Zm9vOmJhcg==", "Bearer " + "é" * 5]))}
    kind = draw(st.sampled_from(["mutated", "json", "bytes", "none"]))
    if kind == "mutated":
        body = json.dumps(_mutated_payload(draw), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "json":
        body = json.dumps(draw(json_value)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = None
    if body is not None:
        headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", "application/json; x=\x7f"]))
    return method, path, headers, body


def _raw(server: LiveServer, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
    status, _, _, response = raw_request(server.url, method, path, headers, body)
    return status, response


SEEN: dict[str, int] = {}


@pytest.mark.slow
def test_fuzz_the_api_spec(live_server: LiveServer) -> None:
    operations = _paths(live_server)
    assert len(operations) >= 15
    statuses: dict[int, int] = {}

    @FUZZ
    @given(req=requests(operations))
    def one(req: tuple[str, str, dict, bytes | None]) -> None:
        method, path, headers, body = req
        status, response = _raw(live_server, method, path, headers, body)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"{method.upper()} {path!r} -> {status}: {response[-400:]!r}"
        assert b"Traceback" not in response
        if status >= 400 and path.startswith(("/v2/", "/api/")):
            head, _, content = response.partition(b"\r\n\r\n")
            if b"application/json" in head.lower():
                assert "error" in json.loads(content), content[:300]

    one()
    cases = sum(statuses.values())
    assert cases >= EXAMPLES * 0.9
    assert httpx.get(live_server.url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(live_server.url + "/v2/endpoint/admin", headers=live_server.headers(), timeout=10).status_code == 200
    SEEN[live_server.database_url.split(":")[0]] = cases
    print(f"\napi fuzz: {cases} cases over {len(operations)} operations, statuses {sorted(statuses.items())}",
          file=sys.stderr)
