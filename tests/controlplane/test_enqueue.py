"""The hand-off to the worker: a Celery message per write; a broker outage never loses or fails the request."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from controlplane.app import create_app
from tests.controlplane.conftest import ADMIN_TOKEN, Api, payload, reconcile_ids
from tests.fixtures.processes import free_port
from tests.fixtures.services import RedisServer

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_broker_down_still_stores_the_request(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(dead), raise_server_exceptions=False) as http:
        r = http.post("/v2/endpoint/admin", json=payload("nb"), headers=ADMIN)
        assert r.status_code == 201, r.text
        assert http.post("/v2/endpoint/admin/nb/pause", headers=ADMIN).status_code == 200
        assert http.get("/v2/endpoint/admin/nb", headers=ADMIN).json()["status"]["desiredState"] == "paused"
    assert "the periodic resync will pick it up" in caplog.text


def test_messages_flow_again_after_a_broker_restart(api: Api, redis_server: RedisServer) -> None:
    assert api.http.post("/v2/endpoint/admin", json=payload("r1"), headers=api.admin).status_code == 201
    assert len(reconcile_ids(redis_server.url)) == 1
    redis_server.restart()  # non-persistent: the queued message is gone, as after a crash
    assert reconcile_ids(redis_server.url) == []
    assert api.http.post("/v2/endpoint/admin", json=payload("r2"), headers=api.admin).status_code == 201
    assert len(reconcile_ids(redis_server.url)) == 1
