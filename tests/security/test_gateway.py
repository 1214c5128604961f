"""The data-plane gateway as a hostile client meets it, over real sockets to a real `python -m controlplane` process
(and a real stack with a real replica where a body has to reach one):

- the payloads that crashed it (a name with a newline or a Cyrillic letter, bearer bytes that are not ASCII, a
  replica's status message with a line break) are a 4xx/503 JSON error with no raw input in a header, and the
  server answers afterwards;
- a caller that cannot see an endpoint gets exactly the answer of an endpoint that does not exist;
- thousands of random paths leave the number of gateway metric series where it was;
- request bodies stream to the replica, the gateway refuses a body over `ENDPOINTCTL_GATEWAY_PAYLOAD_LIMIT` before
  reading it (Content-Length) or as soon as it passes the limit (chunked), and the API's memory stays flat under
  a 300 MB upload.
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import string
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.controlplane.conftest import ADMIN_TOKEN, LiveServer, payload, start_live_server, stop_live_server
from tests.e2e.conftest import Api, create_body
from tests.fixtures.processes import wait_until
from tests.fixtures.services import RedisServer

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
NO_WAIT = {"x-scale-up-timeout": "0"}  # an authorized request to an endpoint without replicas: 503 at once
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _create(server: LiveServer, namespace: str, name: str, kind: str) -> None:
    made = httpx.post(f"{server.url}/api/namespaces", json={"name": namespace, "kind": "user"}, headers=ADMIN, timeout=30)
    assert made.status_code in (201, 409), made.text
    r = httpx.post(f"{server.url}/v2/endpoint/{namespace}", json=payload(name, type=kind), headers=ADMIN, timeout=30)
    assert r.status_code == 201, r.text


def _exchange(url: str, request: bytes, *, timeout: float = 60) -> tuple[int, list[bytes], bytes]:
    """Send raw bytes and read one response (by its Content-Length, so a request whose body the server did not read
    can stay open): status, header lines, body. A dropped connection or anything but HTTP fails the test here."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        response = b""
        while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
            response += chunk
        assert response.startswith(b"HTTP/1.1 "), f"dropped or not HTTP: {response[:200]!r} for {request[:200]!r}"
        head, _, body = response.partition(b"\r\n\r\n")
        header_lines = head.split(b"\r\n")[1:]
        length = next(int(line.split(b":")[1]) for line in header_lines if line.lower().startswith(b"content-length:"))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    assert len(body) == length, f"connection dropped mid-response: {response[:300]!r}"
    return int(response[9:12]), header_lines, body


def _request(method: str, path: str, headers: dict[str, str | bytes] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: gateway", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _assert_safe_json_error(status: int, header_lines: list[bytes], body: bytes, *, what: object) -> dict:
    assert 400 <= status < 500 or status == 503, (what, status, body[:300])
    for line in header_lines:  # nothing but printable ASCII in any header: no echo of the bytes that came in
        assert all(32 <= b < 127 for b in line), (what, line)
    assert any(line.lower() == b"content-type: application/json" for line in header_lines), (what, header_lines)
    error = json.loads(body)
    assert isinstance(error.get("error"), str) and error["error"], (what, error)
    return error


# -- item 3: inputs that crashed the gateway -----------------------------------------------------------------------
@SQLITE_ONLY
def test_hostile_paths_and_headers_are_json_errors_and_the_server_keeps_answering(live_server: LiveServer,
                                                                                 db_url: str) -> None:
    _create(live_server, "bob", "tiny", "authenticated")
    bob = live_server.mint("bob")
    cases: list[tuple[str, str, dict[str, str | bytes], int]] = [
        # The exact payloads of the issue: a name echoed into X-Error-Message, a name outside latin-1, str bytes
        # compared with hmac.compare_digest.
        ("GET", "/endpoints/bob/tiny%0A/health", {}, 404),
        ("GET", "/endpoints/bob/tiny%0D%0A/health", {}, 404),
        ("GET", "/endpoints/b%D0%BEb/tiny/health", {}, 404),
        ("GET", "/endpoints/bob/tiny/health", {"authorization": b"Bearer \xe9\xe9"}, 401),
        # Their neighbours.
        ("GET", "/endpoints/bob/tiny%0D%0ASet-Cookie:%20x=1/health", _bearer(bob), 404),
        ("GET", "/endpoints/bob%00/tiny/health", {}, 404),
        ("GET", "/endpoints/bob/ti%2Fny/health", _bearer(bob), 404),
        ("GET", "/endpoints/%2E%2E/tiny/health", {}, 404),
        ("GET", "/endpoints/bob/%FF%FE/health", {}, 404),
        ("GET", "/endpoints/bob/" + "a" * 5000 + "/health", {}, 404),
        ("POST", "/endpoints/bob/TINY/generate", _bearer(bob), 404),
        ("GET", "/endpoints/bob/tiny/health", {"authorization": b"Bearer epc_\xff" + b"a" * 42}, 401),
        ("GET", "/endpoints/bob/tiny/health", {"authorization": b"Bearer \xc3\xa9t\xc3\xa9"}, 401),
        ("GET", "/endpoints/bob/tiny/health", {"authorization": b"Bearer \xe9\xe9", **NO_WAIT}, 401),
        ("GET", "/endpoints/bob/tiny/health", {**_bearer(bob), "x-scale-up-timeout": b"\xe9\x85\xd0\xbe"}, 400),
        ("GET", "/endpoints/bob/tiny/health", {**_bearer(bob), "x-scale-up-timeout": "1e999"}, 400),
        ("GET", "/endpoints/bob/tiny/health", {**_bearer(bob), "x-scale-up-timeout": "nan"}, 400),
    ]
    for method, path, headers, expected in cases:
        status, header_lines, body = _exchange(live_server.url, _request(method, path, headers))
        _assert_safe_json_error(status, header_lines, body, what=(method, path, headers))
        assert status == expected, (method, path, status, body)
        assert httpx.get(f"{live_server.url}/healthz", timeout=10).status_code == 200

    # A replica's start error, with a line break and a character outside latin-1, reaches the owner in the body
    # of a 503, and never a header.
    message = "replica exited\r\nSet-Cookie: pwned=1 \u043e\u2028"
    database = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute("update endpoints set state='failed', message=? where namespace='bob' and name='tiny'", (message,))
    wait_until(lambda: _exchange(live_server.url, _request("GET", "/endpoints/bob/tiny/health",
                                                           _bearer(bob)))[0] == 503,
               timeout=10, every=0.2, what="the gateway to see the failed state")
    status, header_lines, body = _exchange(live_server.url, _request("GET", "/endpoints/bob/tiny/health", _bearer(bob)))
    error = _assert_safe_json_error(status, header_lines, body, what="failed endpoint")
    assert status == 503 and message in error["error"]
    assert httpx.get(f"{live_server.url}/healthz", timeout=10).status_code == 200


# -- item 4 (gateway half): uniform 404 -----------------------------------------------------------------------------
def _answer(url: str, path: str, headers: dict[str, str], source: str | None = None) -> tuple[int, dict, bytes]:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=30) as client:
        r = client.get(url + path, headers=headers | NO_WAIT)
    kept = {k: v for k, v in r.headers.items() if k not in ("date", "server")}
    return r.status_code, kept, r.content


@SQLITE_ONLY
def test_a_caller_that_cannot_see_an_endpoint_learns_nothing_about_its_existence(
        db_url: str, tmp_path: Path, redis_server: RedisServer) -> None:
    # Only 10.0.0.0/8 counts as "inside" for private endpoints: the test's loopback plays the outside world.
    server = start_live_server(database_url=db_url, data_dir=tmp_path / "live", redis_url=redis_server.url,
                               extra_env={"ENDPOINTCTL_PRIVATE_NETWORKS": "10.0.0.0/8"})
    try:
        bob = server.mint("bob")
        alice = server.mint("alice")
        callers = {"anonymous": {}, "garbage": _bearer("epc_" + "x" * 43),
                   "non-ascii": {"authorization": b"Bearer \xe9"}, "other tenant": _bearer(bob)}
        names = {"guarded": "authenticated", "inside": "private"}
        paths = [f"/endpoints/alice/{name}{suffix}" for name in names for suffix in ("/health", "/v1/models", "")]
        before = {(who, path): _answer(server.url, path, headers) for who, headers in callers.items() for path in paths}
        for name, kind in names.items():
            _create(server, "alice", name, kind)
        # The gateway caches what it read about an endpoint for a moment: wait until it sees both.
        for name in names:
            wait_until(lambda: _answer(server.url, f"/endpoints/alice/{name}/health", ADMIN)[0] != 404, timeout=10,
                       every=0.2, what=f"the gateway to see alice/{name}")
        after = {(who, path): _answer(server.url, path, headers) for who, headers in callers.items() for path in paths}
        for key in before:
            assert after[key] == before[key], (key, before[key], after[key])
            status, _, body = after[key]
            assert status == (404 if key[0] == "other tenant" else 401) and "error" in json.loads(body), (key, body)
        # Those who can see them are told what is wrong: the owner from outside the private network, and the owner
        # inside it (no replica yet).
        status, _, body = _answer(server.url, "/endpoints/alice/inside/health", _bearer(alice))
        assert status == 403 and "private" in json.loads(body)["error"]
        assert _answer(server.url, "/endpoints/alice/guarded/health", _bearer(alice))[0] == 503
        assert _answer(server.url, "/endpoints/alice/guarded/health", ADMIN)[0] == 503
        assert _answer(server.url, "/endpoints/alice/missing/health", _bearer(alice))[0] == 404
    finally:
        stop_live_server(server)


# -- item 4: bounded metric labels ----------------------------------------------------------------------------------
def _gateway_series(server: LiveServer) -> tuple[list[str], int]:
    text = httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=30).text
    return [line for line in text.splitlines() if line.startswith("endpointctl_gateway_")], len(text)


@SQLITE_ONLY
def test_random_paths_do_not_grow_the_gateway_metrics(live_server: LiveServer) -> None:
    _create(live_server, "alice", "known", "authenticated")
    alice = live_server.mint("alice")
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        # Every kind of answer once, so the bounded series exist before the count is taken.
        for path, headers in (("/endpoints/zz/zz/z", {}), ("/endpoints/alice/known/z", _bearer(alice) | NO_WAIT),
                              ("/endpoints/alice/zz/z", _bearer(alice)), ("/endpoints/alice/known/z", {}),
                              ("/endpoints/zz/zz/z", _bearer(alice)), ("/endpoints/zz/Z%0A/z", {})):
            client.get(path, headers=headers)
        series_before, size_before = _gateway_series(live_server)
        rng = random.Random(16)
        alphabet = string.ascii_lowercase + string.digits

        def word() -> str:
            return "".join(rng.choices(alphabet, k=rng.randint(1, 20)))

        statuses: dict[int, int] = {}
        for i in range(5000):
            headers = _bearer(alice) if i % 5 == 0 else {}
            namespace = "alice" if i % 10 == 0 else word()
            status = client.get(f"/endpoints/{namespace}/{word()}/{word()}", headers=headers).status_code
            statuses[status] = statuses.get(status, 0) + 1
    series_after, size_after = _gateway_series(live_server)
    print(f"\ngateway metrics: {len(series_before)} series / {size_before} bytes before 5000 random paths, "
          f"{len(series_after)} / {size_after} after; statuses {sorted(statuses.items())}", file=sys.stderr)
    assert set(statuses) <= {401, 404}, statuses
    assert len(series_after) == len(series_before), sorted(set(series_after) - set(series_before))[:10]
    # The endpoint that exists keeps its own series: the bound is not bought by dropping every label.
    assert any('endpoint="known",namespace="alice"' in line for line in series_after)
    assert any('endpoint="",namespace=""' in line for line in series_after)


# -- item 7: request bodies are streamed and limited ----------------------------------------------------------------
def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _zeros(total: int, piece: int = 1 << 20):
    """`total` bytes from a generator, a MiB at a time: the test never holds the upload."""
    sent = 0
    block = b" " * piece
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n


UPLOAD = 300 * 1000 * 1000


@pytest.mark.slow
def test_bodies_stream_to_the_replica_and_a_300_mb_upload_is_refused_with_flat_memory(make_stack, tiny_model_dir):
    limit = 2_000_000  # the runtime's own default, which is also the gateway's
    stack = make_stack()
    api = Api(stack.url)
    created = api.http.post("/v2/endpoint/admin", json=create_body("pub", str(tiny_model_dir), type="public"))
    assert created.status_code == 201, created.text
    api.wait_state("pub", "running", timeout=240)
    url = f"{stack.url}/endpoints/admin/pub"
    request = b'{"inputs": "hi", "parameters": {"max_new_tokens": 2}}'

    # Bodies larger than what the gateway keeps in memory reach the replica whole, sized or chunked: JSON padded
    # with whitespace parses only if every byte arrived.
    padded = request + b" " * (limit - len(request) - 10)
    for content in (padded, _chunked(padded)):
        r = httpx.post(f"{url}/generate", content=content, headers={"content-type": "application/json"}, timeout=120)
        assert r.status_code == 200 and "generated_text" in r.json(), r.text[:300]

    # One byte over: the gateway's 413 (its envelope), sized and chunked.
    over = padded + b" " * 11
    for content in (over, _chunked(over)):
        r = httpx.post(f"{url}/generate", content=content, headers={"content-type": "application/json"}, timeout=120)
        assert r.status_code == 413 and r.json()["error_type"] == "gateway", r.text[:300]

    # Refused before the body is read: a Content-Length over the limit is answered with no body sent at all, and a
    # chunked body as soon as it passes the limit, without its end (a gateway that waited would never answer).
    head = b"POST /endpoints/admin/pub/generate HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    status, header_lines, body = _exchange(stack.url, head + f"Content-Length: {UPLOAD}\r\n\r\n".encode())
    assert status == 413 and json.loads(body)["error_type"] == "gateway", body
    piece = b" " * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(limit // len(piece) + 2))
    status, header_lines, body = _exchange(stack.url, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert status == 413 and json.loads(body)["error_type"] == "gateway", body

    # 300 MB, sized and chunked, streamed from a generator: 413, and the API process does not grow.
    pid = stack.api.proc.pid
    before = _memory_kb(pid)
    timings = []
    for headers in ({"content-length": str(UPLOAD)}, {}):
        start = time.monotonic()
        r = httpx.post(f"{url}/generate", content=_zeros(UPLOAD),
                       headers={"content-type": "application/json", **headers}, timeout=300)
        timings.append(time.monotonic() - start)
        assert r.status_code == 413 and r.json()["error_type"] == "gateway", r.text[:300]
    after = _memory_kb(pid)
    grown_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(f"\n300 MB uploads: 413 after {timings[0]:.2f} s (Content-Length) and {timings[1]:.2f} s (chunked); API "
          f"VmHWM {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB, VmRSS {before['VmRSS'] / 1024:.0f} "
          f"-> {after['VmRSS'] / 1024:.0f} MB", file=sys.stderr)
    assert grown_mb < 50, (before, after)
    # And the gateway still serves.
    r = httpx.post(f"{url}/generate", content=request, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text


def _chunked(data: bytes, piece: int = 100_000):
    """`data` from a generator (so httpx sends it chunked, without a Content-Length)."""
    for start in range(0, len(data), piece):
        yield data[start:start + piece]


@SQLITE_ONLY
async def test_the_gateway_forgets_names_nobody_has(settings, monkeypatch) -> None:
    """What the gateway caches about endpoints (absent ones included) stays bounded however many names are tried."""
    from common.db import session_factory
    from controlplane.gateway import routing

    monkeypatch.setattr(routing, "MAX_ENTRIES", 50)
    directory = routing.EndpointDirectory(session_factory(settings))
    for i in range(400):
        assert await directory.get("alice", f"nobody-{i}") is None
        assert len(directory._cache) <= 50 and len(directory._fetched) <= 50
