"""Control-plane fixtures: every test runs on SQLite *and* on a real PostgreSQL server, with the real Celery
hand-off into a real Redis (no worker runs here, so endpoints stay `pending`; tests look at the broker instead).

- ``db_url``: a fresh database of each backend, migrated by the test that needs it (``settings`` does).
- ``client``: FastAPI's TestClient over ``create_app(settings)``, plus ``admin`` headers and ``mint()``.
- ``live_server``: ``python -m controlplane --host 127.0.0.1 --port P`` as a subprocess (migrating at start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from tests.fixtures.processes import free_port
from tests.fixtures.services import PostgresServer, RedisServer

ADMIN_TOKEN = "admin-bootstrap-token-for-tests"
ROOT = Path(__file__).resolve().parents[2]


def payload(name: str = "e1", **overrides: object) -> dict:
    """A create body exactly as huggingface_hub 2.4 sends it (the seed example's hardware)."""
    body = {
        "compute": {"accelerator": "gpu", "instanceSize": "x2", "instanceType": "nvidia-a100",
                    "scaling": {"maxReplica": 2, "minReplica": 1, "scaleToZeroTimeout": None}},
        "model": {"framework": "pytorch", "repository": "gpt2", "revision": None,
                  "image": {"huggingface": {}}, "task": "text-generation"},
        "name": name,
        "provider": {"region": "us-east-1", "vendor": "aws"},
        "type": "authenticated",
    }
    for key, value in overrides.items():
        body[key] = value
    return body


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'controlplane.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        from common.db import dispose_engines

        dispose_engines()
        server.drop_database(url)


@pytest.fixture
def settings(db_url: str, tmp_path: Path, redis_server: RedisServer) -> Settings:
    from controlplane import migrate

    redis_server.flush()  # each test reads the broker queue from empty
    s = Settings(data_dir=tmp_path / "data", database_url=db_url, redis_url=redis_server.url,
                 admin_token=ADMIN_TOKEN, provider="nonexistent-provider-for-tests")
    s.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(s)
    return s


@dataclass
class Api:
    """A TestClient with the admin's headers and a way to mint user tokens."""

    http: TestClient
    settings: Settings
    admin: dict[str, str]

    def mint(self, namespace: str, orgs: list[str] | None = None) -> dict[str, str]:
        r = self.http.post("/api/tokens", json={"namespace": namespace, "name": "t", "orgs": orgs or []},
                           headers=self.admin)
        assert r.status_code == 201, r.text
        return {"authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    from controlplane.app import create_app
    from controlplane.auth import invalidate_cache

    invalidate_cache()
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield Api(http=http, settings=settings, admin={"authorization": f"Bearer {ADMIN_TOKEN}"})


def broker_messages(redis_url: str, queue: str = "endpointctl") -> list[dict]:
    """The Celery messages waiting in the broker queue (kombu's Redis transport keeps a list per queue)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def reconcile_ids(redis_url: str) -> list[int]:
    import base64

    ids = []
    for message in broker_messages(redis_url):
        assert message["headers"]["task"] == "worker.reconcile"
        args = json.loads(base64.b64decode(message["body"]))[0] if message.get("properties", {}).get(
            "body_encoding") == "base64" else json.loads(message["body"])[0]
        ids.append(int(args[0]))
    return ids


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen
    log: Path
    redis_url: str
    database_url: str

    def headers(self, token: str = ADMIN_TOKEN) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    def mint(self, namespace: str, orgs: list[str] | None = None) -> str:
        r = httpx.post(f"{self.url}/api/tokens", json={"namespace": namespace, "orgs": orgs or []},
                       headers=self.headers(), timeout=30)
        assert r.status_code == 201, r.text
        return r.json()["token"]


def start_live_server(*, database_url: str, data_dir: Path, redis_url: str, extra_env: dict | None = None,
                      args: tuple[str, ...] = (), wait_ready: bool = True) -> LiveServer:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "ENDPOINTCTL_DATA_DIR": str(data_dir), "REDIS_URL": redis_url,
           "ENDPOINTCTL_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1",
           # The tests create GPU instance types on the local provider of a machine that may have no GPU.
           "ENDPOINTCTL_LOCAL_GPU_EMULATION": "true", **(extra_env or {})}
    log = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controlplane", "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = LiveServer(url=f"http://127.0.0.1:{port}", proc=proc, log=log, redis_url=redis_url,
                        database_url=database_url)
    deadline = time.monotonic() + 90
    path = "/readyz" if wait_ready else "/healthz"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"control plane exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_live_server(server)
            raise RuntimeError(f"control plane not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_live_server(server: LiveServer) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=15)


@pytest.fixture
def live_server(db_url: str, tmp_path: Path, redis_server: RedisServer) -> Iterator[LiveServer]:
    redis_server.flush()
    server = start_live_server(database_url=db_url, data_dir=tmp_path / "live", redis_url=redis_server.url)
    try:
        yield server
    finally:
        stop_live_server(server)


@pytest.fixture
def set_status(settings: Settings) -> Callable[..., None]:
    """Write status columns as the worker would (tests have no worker)."""
    from sqlalchemy import update

    from common.db import session_factory
    from common.models import Endpoint

    def _set(namespace: str, name: str, **columns: object) -> None:
        with session_factory(settings)() as session:
            session.execute(update(Endpoint).where(Endpoint.namespace == namespace, Endpoint.name == name)
                            .values(**columns))
            session.commit()

    return _set
