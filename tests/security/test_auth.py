"""Authentication as a hostile tenant meets it: `/metrics` readable only by the admin or the scrape token, a revoked
token refused by every API process and the gateway the moment the revoke call returns, `X-Forwarded-For` believed
only from configured proxies, and bearer bytes that are not ASCII answered 401 rather than 500.

Everything runs against real `python -m controlplane` processes (two of them sharing one database where the point is
"every process"), on SQLite and on PostgreSQL where the database takes part.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.controlplane.conftest import ADMIN_TOKEN, LiveServer, payload, start_live_server, stop_live_server
from tests.fixtures.services import RedisServer

METRICS_TOKEN = "epm_scrape-token-for-the-security-suite-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# A gateway request to an endpoint without replicas that passes authorization is held for a replica; with no time
# to wait it is answered 503 at once. 401/403 come before that, so no replica is needed to tell them apart.
NO_WAIT = {"x-scale-up-timeout": "0"}


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _create(server: LiveServer, namespace: str, name: str, kind: str) -> None:
    made = httpx.post(f"{server.url}/api/namespaces", json={"name": namespace, "kind": "user"}, headers=ADMIN, timeout=30)
    assert made.status_code in (201, 409), made.text
    r = httpx.post(f"{server.url}/v2/endpoint/{namespace}", json=payload(name, type=kind), headers=ADMIN, timeout=30)
    assert r.status_code == 201, r.text


@dataclass
class Servers:
    """Live control-plane processes sharing one database (and so one secrets key, as Helm's replicas do); stopped
    at the end of the test."""

    db_url: str
    tmp_path: Path
    redis: RedisServer
    secrets_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    started: list[LiveServer] = field(default_factory=list)

    def start(self, **env: str) -> LiveServer:
        server = start_live_server(database_url=self.db_url, data_dir=self.tmp_path / f"api{len(self.started)}",
                                   redis_url=self.redis.url,
                                   extra_env={"ENDPOINTCTL_SECRETS_KEY": self.secrets_key, **env})
        self.started.append(server)
        return server


@pytest.fixture
def servers(db_url: str, tmp_path: Path, redis_server: RedisServer) -> Iterator[Servers]:
    redis_server.flush()
    group = Servers(db_url, tmp_path, redis_server)
    try:
        yield group
    finally:
        for server in group.started:
            stop_live_server(server)


# -- /metrics ------------------------------------------------------------------------------------------------------
def test_metrics_are_read_only_by_the_admin_and_the_scrape_token(servers: Servers) -> None:
    server = servers.start(ENDPOINTCTL_METRICS_TOKEN=METRICS_TOKEN)
    _create(server, "alice", "secret-project", "authenticated")
    alice = server.mint("alice")
    url = f"{server.url}/metrics"
    # The gateway's series name the endpoint; before this change anyone could read them.
    assert httpx.get(f"{server.url}/endpoints/alice/secret-project/health", headers=_bearer(alice) | NO_WAIT,
                     timeout=30).status_code == 503

    for headers, status in (({}, 401), (_bearer("epc_" + "x" * 43), 401), (_bearer(METRICS_TOKEN[:-1] + "X"), 401),
                            (_bearer(alice), 403), ({"authorization": b"Bearer \xe9\xe9"}, 401)):
        r = httpx.get(url, headers=headers, timeout=30)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert set(r.json()) == {"error"} and "secret-project" not in r.text
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    for token in (ADMIN_TOKEN, METRICS_TOKEN):
        r = httpx.get(url, headers=_bearer(token), timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert 'endpoint="secret-project"' in r.text and "endpointctl_api_requests_total" in r.text

    # The scrape token reads /metrics and nothing else: not the API, not the gateway.
    scrape = _bearer(METRICS_TOKEN)
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=scrape, timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/v2/endpoint/alice", headers=scrape, timeout=30).status_code == 401
    assert httpx.post(f"{server.url}/api/tokens", json={"namespace": "alice", "name": "x"}, headers=scrape,
                      timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/endpoints/alice/secret-project/health", headers=scrape | NO_WAIT,
                     timeout=30).status_code == 401


def test_without_a_scrape_token_only_the_admin_reads_metrics(servers: Servers) -> None:
    server = servers.start()
    bob = server.mint("bob")
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=_bearer(bob), timeout=30).status_code == 403
    # An empty bearer must not match an unset scrape token.
    assert httpx.get(f"{server.url}/metrics", headers={"authorization": "Bearer"}, timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=30).status_code == 200


def test_bearer_bytes_that_are_not_ascii_are_401_on_the_api(servers: Servers) -> None:
    server = servers.start()
    for raw in (b"Bearer \xe9\xe9", b"Bearer epc_\xff" + b"a" * 42, b"Bearer \xc3\xa9t\xc3\xa9"):
        for path in ("/api/whoami-v2", "/v2/endpoint/admin", "/metrics"):
            r = httpx.get(f"{server.url}{path}", headers={"authorization": raw}, timeout=30)
            assert r.status_code == 401 and "error" in r.json(), (raw, path, r.text)
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


# -- revocation ------------------------------------------------------------------------------------------------------
class Hammer:
    """Keeps sending one token's requests to one URL from a thread; remembers what answered after `stop_time` is
    marked, i.e. every request that was *sent* after the revoke call returned."""

    def __init__(self, url: str, headers: dict[str, str], accepted: int) -> None:
        self.url, self.headers, self.accepted = url, headers, accepted
        self.revoked = threading.Event()
        self.finish = threading.Event()
        self.after: list[int] = []
        self.before: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.finish.is_set():
                sent_after = self.revoked.is_set()
                status = client.get(self.url, headers=self.headers).status_code
                (self.after if sent_after else self.before).append(status)

    def stop(self) -> None:
        self.finish.set()
        self.thread.join(timeout=60)


def test_revocation_is_immediate_on_every_api_process_and_the_gateway(servers: Servers) -> None:
    a, b = servers.start(), servers.start()
    _create(a, "alice", "guarded", "authenticated")
    minted = httpx.post(f"{a.url}/api/tokens", json={"namespace": "alice", "name": "laptop"}, headers=ADMIN,
                        timeout=30).json()
    alice = _bearer(minted["token"])
    routes = [(s, path) for s in (a, b) for path in ("/api/whoami-v2", "/v2/endpoint/alice/guarded",
                                                     "/endpoints/alice/guarded/health")]
    accepted = {"/api/whoami-v2": 200, "/v2/endpoint/alice/guarded": 200, "/endpoints/alice/guarded/health": 503}
    # Warm every process's cache with the valid token, and keep hitting it while the revocation happens.
    for server, path in routes:
        r = httpx.get(f"{server.url}{path}", headers=alice | NO_WAIT, timeout=30)
        assert r.status_code == accepted[path], (server.url, path, r.text)
    hammers = [Hammer(f"{server.url}{path}", alice | NO_WAIT, accepted[path]) for server, path in routes]
    try:
        revoke = httpx.delete(f"{a.url}/api/tokens/{minted['id']}", headers=ADMIN, timeout=60)
        for hammer in hammers:
            hammer.revoked.set()
        assert revoke.status_code == 200 and revoke.json()["revoked"] is True
        for server, path in routes:  # first thing after the revoke returns, on both processes
            r = httpx.get(f"{server.url}{path}", headers=alice | NO_WAIT, timeout=30)
            assert r.status_code == 401 and "error" in r.json(), (server.url, path, r.status_code, r.text)
        for _ in range(3):  # and again, while the hammers keep going
            for server, path in routes:
                assert httpx.get(f"{server.url}{path}", headers=alice | NO_WAIT, timeout=30).status_code == 401
    finally:
        for hammer in hammers:
            hammer.stop()
    for hammer in hammers:
        # Requests in flight while the revoke ran may go either way; none may be anything else.
        assert hammer.before and set(hammer.before) <= {hammer.accepted, 401}, (hammer.url, hammer.before)
        assert set(hammer.after) <= {401}, (hammer.url, hammer.after)


# -- forwarded headers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_forwarded_for_is_believed_only_from_configured_proxies(servers: Servers) -> None:
    # Only 10.0.0.0/8 is "inside": the test's loopback peer plays the outside world, and claims to be inside.
    inside = {"ENDPOINTCTL_PRIVATE_NETWORKS": "10.0.0.0/8"}
    default = servers.start(**inside)
    behind_proxy = servers.start(**inside, ENDPOINTCTL_FORWARDED_ALLOW_IPS="127.0.0.1")
    _create(default, "admin", "priv", "private")
    spoofed = ADMIN | NO_WAIT | {"x-forwarded-for": "10.1.2.3"}
    url = "/endpoints/admin/priv/health"

    r = httpx.get(f"{default.url}{url}", headers=spoofed, timeout=30)
    assert r.status_code == 403 and "private" in r.json()["error"], r.text
    for value in ("127.0.0.1", "10.1.2.3, 10.9.9.9", "::1"):
        assert httpx.get(f"{default.url}{url}", headers=ADMIN | NO_WAIT | {"x-forwarded-for": value},
                         timeout=30).status_code == 403, value
    # Behind a configured proxy (here: loopback), the client it names is the one that counts.
    assert httpx.get(f"{behind_proxy.url}{url}", headers=spoofed, timeout=30).status_code == 503
    assert httpx.get(f"{behind_proxy.url}{url}", headers=ADMIN | NO_WAIT | {"x-forwarded-for": "192.0.2.7"},
                     timeout=30).status_code == 403
    assert httpx.get(f"{behind_proxy.url}{url}", headers=ADMIN | NO_WAIT, timeout=30).status_code == 403
