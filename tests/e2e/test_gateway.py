"""Gateway behaviour with real replicas: auth by endpoint type, scale-to-zero by the beat, autoscaling."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.slow]

CHAT = {"model": "tgi", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _mint(api: Api, user: str) -> str:
    response = api.http.post("/api/tokens", json={"namespace": user, "name": f"{user}-token"})
    assert response.status_code in (200, 201), response.text
    return response.json()["token"]


def test_auth_by_endpoint_type(make_stack, tiny_model_dir):
    # Only 127.0.0.2 counts as "inside" for private endpoints here, so 127.0.0.1 plays the outside world.
    stack = make_stack(ENDPOINTCTL_PRIVATE_NETWORKS="127.0.0.2/32")
    api = Api(stack.url)
    for name, kind in (("pub", "public"), ("authn", "authenticated"), ("priv", "private")):
        assert api.http.post("/v2/endpoint/admin", json=create_body(name, str(tiny_model_dir), type=kind)).status_code == 201
    for name in ("pub", "authn", "priv"):
        api.wait_state(name, "running", timeout=240)
    bob = _mint(api, "bob")
    base = f"{stack.url}/endpoints/admin"

    def call(name: str, token: str | None = None, source: str | None = None) -> httpx.Response:
        transport = httpx.HTTPTransport(local_address=source) if source else None
        with httpx.Client(transport=transport, timeout=60) as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.post(f"{base}/{name}/v1/chat/completions", json=CHAT, headers=headers)

    assert call("pub").status_code == 200
    assert call("authn").status_code == 401
    assert call("authn", "epc_not-a-real-token").status_code == 401
    hidden = call("authn", bob)  # another tenant's endpoint answers exactly as a missing one would
    assert hidden.status_code == 404 and hidden.json()["error"] == "endpoint admin/authn not found"
    assert call("authn", ADMIN_TOKEN).status_code == 200
    outside = call("priv", ADMIN_TOKEN)
    assert outside.status_code == 403 and "private" in outside.json()["error"]
    assert call("priv", ADMIN_TOKEN, source="127.0.0.2").status_code == 200
    assert call("priv", None, source="127.0.0.2").status_code == 401
    assert call("nope", ADMIN_TOKEN).status_code == 404
    bad_timeout = httpx.post(f"{base}/authn/v1/models", headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                                 "X-Scale-Up-Timeout": "soon"})
    assert bad_timeout.status_code == 400 and "X-Scale-Up-Timeout" in bad_timeout.json()["error"]
    metrics = api.http.get("/metrics").text
    for status in ("200", "401", "404"):
        assert f'endpointctl_gateway_requests_total{{endpoint="authn",namespace="admin",status="{status}"}}' in metrics
    assert 'endpointctl_gateway_inflight_requests{endpoint="pub",namespace="admin"} 0.0' in metrics


def test_idle_endpoint_is_scaled_to_zero_by_the_beat(make_stack, tiny_model_dir):
    stack = make_stack()
    api = Api(stack.url)
    body = create_body("sleepy", str(tiny_model_dir))
    body["compute"]["scaling"].update(minReplica=0, scaleToZeroTimeout=1)
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
    api.wait_state("sleepy", "running", timeout=240)
    # Pretend the last request and the last transition to ready were two minutes ago.
    past = (datetime.now(UTC) - timedelta(minutes=2))
    with sqlite3.connect(stack.data_dir / "endpointctl.db") as db:
        conditions = json.loads(db.execute("select conditions from endpoints where name='sleepy'").fetchone()[0])
        for condition in conditions:
            condition["lastTransitionTime"] = past.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        db.execute("update endpoints set last_activity_at=?, conditions=? where name='sleepy'",
                   (past.replace(tzinfo=None).isoformat(sep=" "), json.dumps(conditions)))
    api.wait_state("sleepy", "scaledToZero", timeout=60)
    assert any(e["reason"] == "ScaledToZero" and "scaleToZeroTimeout" in e["message"] for e in api.events("sleepy"))


def test_autoscale_between_min_and_max_on_pending_requests(make_stack, tiny_model_dir):
    stack = make_stack()
    api = Api(stack.url)
    body = create_body("busy", str(tiny_model_dir))
    body["compute"]["scaling"].update(minReplica=1, maxReplica=2, measure={"pendingRequests": 1})
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
    api.wait_state("busy", "running", timeout=240)
    url = api.get("busy")["status"]["url"] + "/v1/completions"
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            while not stop.is_set():
                client.post(url, json={"model": "tgi", "prompt": "def main():", "max_tokens": 200,
                                       "ignore_eos": True})

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: api.get("busy")["status"]["targetReplica"] == 2, timeout=120, what="scale up to 2")
        wait_until(lambda: api.get("busy")["status"]["readyReplica"] == 2, timeout=180, what="2 ready replicas")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
    wait_until(lambda: api.get("busy")["status"]["targetReplica"] == 1, timeout=120, what="scale back down to 1")
    reasons = [e["reason"] for e in api.events("busy")]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons


def test_streams_pass_through_and_a_client_leaving_cancels_the_generation(make_stack, tiny_model_dir):
    """SSE arrives through the gateway chunk by chunk with its streaming headers; a client that disconnects
    mid-stream makes the gateway drop the upstream connection, so the replica stops generating at once."""
    from tests.runtime.conftest import metric_value

    stack = make_stack()
    api = Api(stack.url)
    body = create_body("relay", str(tiny_model_dir), type="public")
    body["model"]["env"] = {"MAX_TOTAL_TOKENS": "2048", "MAX_INPUT_TOKENS": "256"}
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
    url = api.wait_state("relay", "running", timeout=240)["status"]["url"]
    state_file = next((stack.data_dir / "local-replicas").glob("*-relay/r*.json"))
    replica = f"http://127.0.0.1:{json.loads(state_file.read_text())['port']}"

    plain = httpx.post(f"{url}/v1/completions", json={"prompt": "def f():", "max_tokens": 3}, timeout=60)
    assert plain.status_code == 200 and int(plain.headers["content-length"]) == len(plain.content)

    def replica_metric(name: str) -> float:
        return metric_value(httpx.get(f"{replica}/metrics", timeout=10).text, name)

    before = replica_metric("vllm:generation_tokens_total")
    request = {"prompt": "def f():", "max_tokens": 1800, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{url}/v1/completions", json=request) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache" and resp.headers["x-accel-buffering"] == "no"
        assert len(resp.headers.get_list("date")) == 1 and len(resp.headers.get_list("server")) == 1
        lines = resp.iter_lines()  # held: a dropped iterator would close the stream right here
        events = 0
        for line in lines:
            events += line.startswith("data: {")
            if events >= 3:
                break
        assert replica_metric("vllm:num_requests_running") == 1
    # The client is gone: the replica must drop the sequence long before its 1800 tokens are done.
    wait_until(lambda: replica_metric("vllm:num_requests_running") == 0, timeout=30,
               what="the replica to cancel the abandoned generation")
    assert replica_metric("vllm:generation_tokens_total") - before < 1000
    wait_until(lambda: 'endpointctl_gateway_inflight_requests{endpoint="relay",namespace="admin"} 0.0'
               in api.http.get("/metrics").text, timeout=10, what="the gateway to release the request")
