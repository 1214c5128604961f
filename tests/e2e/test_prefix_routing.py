"""Prefix-aware routing and the gateway's bounded queue with a real stack and two real runtime replicas."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from controlplane.gateway.routing import prefix_key, rank
from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.processes import wait_until
from tests.runtime.conftest import metric_value

pytestmark = [pytest.mark.slow]

SYSTEMS = [f"You are helper {i}; answer in one short sentence." for i in range(16)]


def test_prefixes_stick_to_their_replica_and_a_saturated_endpoint_queues_then_answers_503(make_stack,
                                                                                          tiny_model_dir):
    stack = make_stack(ENDPOINTCTL_GATEWAY_REPLICA_MAX_INFLIGHT="1", ENDPOINTCTL_GATEWAY_QUEUE_TIMEOUT="8")
    api = Api(stack.url)
    body = create_body("sticky", str(tiny_model_dir), type="public")
    body["compute"]["scaling"].update(minReplica=2, maxReplica=2)
    body["model"]["env"] = {"MAX_TOTAL_TOKENS": "2048", "MAX_INPUT_TOKENS": "256"}
    assert api.http.post("/v2/endpoint/admin", json=body).status_code == 201
    url = api.wait_state("sticky", "running", timeout=240)["status"]["url"]
    wait_until(lambda: api.get("sticky")["status"]["readyReplica"] == 2, timeout=240, what="2 ready replicas")
    replicas = [f"http://127.0.0.1:{json.loads(f.read_text())['port']}"
                for f in sorted((stack.data_dir / "local-replicas").glob("*-sticky/r*.json"))]
    assert len(replicas) == 2

    def served() -> dict[str, float]:
        return {r: metric_value(httpx.get(f"{r}/metrics", timeout=10).text, "tgi_request_count_total")
                for r in replicas}

    def chat(system: str, question: str, **extra) -> dict:
        return {"model": "tgi", "max_tokens": 2, **extra,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}

    # Each conversation start goes to the replica its key ranks first, every time (nothing else is in flight).
    homes = {s: rank(prefix_key(json.dumps(chat(s, "Hello")).encode()), replicas)[0] for s in SYSTEMS}
    assert set(homes.values()) == set(replicas)  # sixteen starts: both replicas are some start's home
    with httpx.Client(timeout=120) as client:
        for system in SYSTEMS:
            before = served()
            for question in ("What is an owl?", "Why?", "Where?"):
                # The same conversation resent with more turns keys like its first request.
                conversation = chat(system, "Hello")
                conversation["messages"] += [{"role": "assistant", "content": "Hi."},
                                             {"role": "user", "content": question}]
                response = client.post(f"{url}/v1/chat/completions", json=conversation)
                assert response.status_code == 200, response.text
            after = served()
            assert {r: after[r] - before[r] for r in replicas} == {r: 3.0 if r == homes[system] else 0.0
                                                                    for r in replicas}

        # Bodies the gateway cannot key are the replica's to judge: least outstanding, a 4xx, never a 500.
        for raw in (b"not json", b'{"messages": "x"}', b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                    b'{"prompt": "\\ud800"}'):
            response = client.post(f"{url}/v1/chat/completions", content=raw,
                                   headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (raw[:20], response.status_code, response.text)

    # Saturation: one request in flight per replica is the limit here. A request whose large body stops half-way
    # holds its replica's slot for as long as the test wants (a streamed body is sent to a replica as it arrives).
    admin = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)

    def gauge(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in admin.get("/metrics").text.splitlines()
                   if line.startswith(name + "{") and 'endpoint="sticky"' in line)

    holds: list[tuple[threading.Event, threading.Thread]] = []

    def hold() -> None:
        release = threading.Event()

        def body():
            yield b'{"prompt": "' + b"a" * 300_000
            release.wait(120)
            yield b'", "max_tokens": 1}'

        thread = threading.Thread(target=lambda: httpx.post(f"{url}/v1/completions", content=body(), timeout=120))
        thread.start()
        holds.append((release, thread))
        wait_until(lambda: gauge("endpointctl_gateway_inflight_requests") == len(holds), timeout=30,
                   what=f"{len(holds)} requests in flight")

    def let_go(index: int) -> None:
        release, thread = holds.pop(index)
        release.set()
        thread.join(timeout=120)

    hold()
    hold()
    results: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: results.append(
        httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=120)))
    waiter.start()
    wait_until(lambda: gauge("endpointctl_gateway_queued_requests") == 1, timeout=30,
               what="a request queued in the gateway")
    let_go(0)  # frees a slot: the queued request takes it
    waiter.join(timeout=120)
    assert results and results[0].status_code == 200, results
    assert gauge("endpointctl_gateway_queued_requests") == 0

    hold()  # both replicas busy again; nothing frees a slot within the queue timeout
    refused = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=120)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error_type"] == "gateway" and "limit of 1 requests in flight" in refused.json()["error"]
    while holds:
        let_go(0)
    admin.close()
