"""Property-based fuzzing of the data-plane gateway over raw HTTP: a real `python -m controlplane` process whose
endpoints point at a real runtime replica (the tiny model), hit with random bytes in the namespace, name, replica
path and query (percent-encoded), latin-1 bytes in header values, random methods and bodies, with and without
tokens. No answer may be a 5xx or a dropped connection, error bodies are JSON with an `error`, and the server (and
the replica behind it) is healthy afterwards.

The endpoints that exist have a live replica, so a 502/503 can only be the gateway's fault. Their status is written
into the database as the worker would (this test runs no worker); nothing else writes it meanwhile. Bounded in
examples (deterministic: `derandomize`), small bodies (see test_api_fuzz.py's docstring; large ones are
test_gateway.py's).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.controlplane.conftest import ADMIN_TOKEN, LiveServer, payload
from tests.fixtures.processes import wait_until
from tests.security.test_api_fuzz import _raw

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# What the protocol layer (uvicorn's HTTP parser) answers for bytes that are not HTTP, before any app sees them.
NOT_HTTP = b"Invalid HTTP request received."

encoded = st.binary(max_size=16).map(lambda b: urllib.parse.quote(b, safe=""))
# Header values: mostly what HTTP allows in a value (any latin-1 byte but controls), sometimes anything at all.
value = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).decode("latin-1"))
latin1 = st.one_of(value, value, value, st.binary(max_size=40).map(lambda b: b.decode("latin-1")).filter(
    lambda v: "\r" not in v and "\n" not in v))
segment = st.one_of(encoded, st.text(alphabet="abcz09-._~%", max_size=12),
                    st.sampled_from(["alice", "pub", "authn", "ghost", "%0A", "b%D0%BEb", "tiny%0D%0A", "..", "%2F",
                                     "%ff", "PUB", "pub%00", "a" * 300]))
replica_paths = st.sampled_from(["health", "info", "metrics", "generate", "v1/chat/completions", "v1/completions",
                                 "v1/models", "tokenize", "", "docs", "openapi.json", "nope"])
GENERATE = json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2}}).encode()


@st.composite
def requests(draw: st.DrawFn, tokens: dict[str, str]) -> tuple[str, str, dict[str, str], bytes | None]:
    # Mostly the endpoints that exist (so the replica's side is reached too), sometimes anything.
    namespace = draw(st.sampled_from(["alice", "alice", "alice", None]).flatmap(lambda v: st.just(v) if v else segment))
    name = draw(st.sampled_from(["pub", "authn", "pub", "ghost", None]).flatmap(lambda v: st.just(v) if v else segment))
    rest = draw(st.one_of(replica_paths, st.lists(segment, max_size=3).map("/".join)))
    path = f"/endpoints/{namespace}/{name}/{rest}"
    if draw(st.booleans()):
        path += "?" + draw(st.one_of(encoded, st.text(alphabet="abc=&%+09", max_size=20)))
    # Methods the HTTP parser knows (any other is its 400 before the app): the common ones and the odd ones.
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                                   "TRACE", "PROPFIND", "MKCOL", "PURGE", "SEARCH", "REPORT", "LINK", "QUERY"]))
    headers = {"authorization": draw(st.one_of(
        st.sampled_from(["", *(f"Bearer {token}" for token in tokens.values()), "Bearer epc_" + "A" * 43,
                         "Basic Zm9vOmJhcg==", "Bearer \xe9\xe9", "bearer", "Bearer "]),
        latin1.map(lambda value: "Bearer " + value)))}
    if draw(st.integers(0, 3)) == 0:
        headers["x-scale-up-timeout"] = draw(st.one_of(latin1, st.sampled_from(["0", "-1", "nan", "1e999", "5"])))
    if draw(st.booleans()):
        extra = draw(st.sampled_from(["x-custom", "accept", "content-type", "x-forwarded-for", "expect"]))
        headers[extra] = draw(latin1)
    kind = draw(st.sampled_from(["generate", "json", "bytes", "none"]))
    body = {"generate": GENERATE, "json": json.dumps(draw(st.dictionaries(st.text(max_size=8), st.text(max_size=20),
                                                                             max_size=3))).encode(),
            "bytes": draw(st.binary(max_size=2000)), "none": None}[kind]
    return method, path, headers, body


def _serve_from(server: LiveServer, database: str, replica_url: str) -> None:
    """Mark alice/pub and alice/authn running on the replica, as the worker would after starting it."""
    observed = json.dumps({"replicas": [{"name": "r0", "url": replica_url, "ready": True}]})
    with sqlite3.connect(database) as db:
        db.execute("update endpoints set state='running', ready_replicas=1, observed=? where namespace='alice'",
                   (observed,))
    for name in ("pub", "authn"):
        wait_until(lambda: httpx.get(f"{server.url}/endpoints/alice/{name}/health", headers=ADMIN,
                                     timeout=10).status_code == 200,
                   timeout=15, every=0.2, what=f"alice/{name} to be served")


@pytest.mark.slow
def test_fuzz_the_gateway(live_server: LiveServer, db_url: str, runtime_server) -> None:
    made = httpx.post(f"{live_server.url}/api/namespaces", json={"name": "alice", "kind": "user"}, headers=ADMIN,
                      timeout=30)
    assert made.status_code == 201, made.text
    for name, kind in (("pub", "public"), ("authn", "authenticated")):
        r = httpx.post(f"{live_server.url}/v2/endpoint/alice", json=payload(name, type=kind), headers=ADMIN,
                       timeout=30)
        assert r.status_code == 201, r.text
    _serve_from(live_server, db_url.removeprefix("sqlite:///"), runtime_server.base_url)
    tokens = {"admin": ADMIN_TOKEN, "alice": live_server.mint("alice"), "bob": live_server.mint("bob")}
    statuses: dict[str, int] = {}  # "status" or "status by whom" (gateway, the HTTP parser)

    @FUZZ
    @given(req=requests(tokens))
    def one(req: tuple[str, str, dict[str, str], bytes | None]) -> None:
        method, path, headers, body = req
        status, response = _raw(live_server, method, path, headers, body)
        head, _, content = response.partition(b"\r\n\r\n")
        kind = "not-http" if content == NOT_HTTP else "gateway" if b'"error_type":"gateway"' in content else ""
        statuses[f"{status}{kind and ' ' + kind}"] = statuses.get(f"{status}{kind and ' ' + kind}", 0) + 1
        what = f"{method} {path!r} {headers!r} -> {status}: {response[-400:]!r}"
        assert status < 500, what
        assert b"Traceback" not in content, what
        for line in head.split(b"\r\n")[1:]:
            assert all(32 <= b < 127 for b in line), what
        if status >= 400 and method.upper() != "HEAD":
            if b"application/json" in head.lower():
                assert "error" in json.loads(content), what
            else:
                assert status == 400 and content == NOT_HTTP, what

    one()
    cases = sum(statuses.values())
    print(f"\ngateway fuzz: {cases} cases, statuses {sorted(statuses.items())}", file=sys.stderr)
    assert cases >= EXAMPLES * 0.9
    assert sum(n for status, n in statuses.items() if status < "300") > 0  # some requests reached the replica
    assert httpx.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
    for name in ("pub", "authn"):
        r = httpx.post(f"{live_server.url}/endpoints/alice/{name}/generate", content=GENERATE, headers=ADMIN,
                       timeout=60)
        assert r.status_code == 200 and "generated_text" in r.json(), r.text
