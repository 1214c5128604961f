"""Crash safety: a SIGKILLed worker, a restarted Redis, a killed replica and a model that cannot load."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body, replica_processes
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.slow]


def _create(api: Api, name: str, repository: str, **overrides) -> dict:
    response = api.http.post("/v2/endpoint/admin", json=create_body(name, repository, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


def _key(stack, name: str) -> str:
    keys = [p.name for p in (stack.data_dir / "local-replicas").iterdir() if p.name.endswith(f"-{name}")]
    assert len(keys) == 1, keys
    return keys[0]


def test_worker_sigkilled_mid_reconcile_converges_without_duplicates(make_stack, tiny_model_dir):
    # The worker pauses right after starting replicas and before recording status: we kill it exactly there.
    stack = make_stack(ENDPOINTCTL_FAULT_PAUSE_AFTER_APPLY="30")
    api = Api(stack.url)
    _create(api, "crashy", str(tiny_model_dir))
    log = stack.worker.log_path
    wait_until(lambda: "fault point after_apply" in log.read_text(), timeout=60, what="the reconcile to reach apply")
    assert api.state("crashy") == "pending"  # status not written yet: we are mid-reconcile
    key = _key(stack, "crashy")
    supervisors = replica_processes(stack.data_dir, key)["supervisors"]
    assert len(supervisors) == 1
    stack.worker.proc.send_signal(signal.SIGKILL)
    stack.worker.proc.wait()

    # Restart the worker without the fault: it adopts the live replica instead of starting a second one.
    stack.env.pop("ENDPOINTCTL_FAULT_PAUSE_AFTER_APPLY")
    stack.worker.start(stack.env)
    api.wait_state("crashy", "running", timeout=180)
    procs = replica_processes(stack.data_dir, key)
    assert procs["supervisors"] == supervisors, "the live replica was adopted, not duplicated"
    assert len(procs["runtimes"]) == 1
    reply = httpx.post(api.get("crashy")["status"]["url"] + "/v1/chat/completions", timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       json={"model": "tgi", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_restart_work_resumes(make_stack, redis_server, tiny_model_dir):
    # Supervised as under `endpointctl up`: should Celery's consumer stall after the reconnect (celery#8091), the
    # worker's watchdog exits it and the supervisor starts a fresh one.
    stack = make_stack("redis-postgres", supervise=True, ENDPOINTCTL_WORKER_STALL_TIMEOUT="20")
    api = Api(stack.url)
    _create(api, "redis-restart", str(tiny_model_dir))
    api.wait_state("redis-restart", "running", timeout=180)
    redis_server.restart()
    # The API's enqueue and the worker's consumer both reconnect; nothing is lost either way (resync repairs).
    assert api.http.post("/v2/endpoint/admin/redis-restart/pause").status_code == 200
    api.wait_state("redis-restart", "paused", timeout=120)
    assert api.http.post("/v2/endpoint/admin/redis-restart/resume").status_code == 200
    api.wait_state("redis-restart", "running", timeout=180)


@pytest.mark.redis
@pytest.mark.postgres
def test_worker_whose_consumer_stops_is_restarted_by_its_watchdog(make_stack, tiny_model_dir):
    """A consumer that is connected but receives nothing (what celery#8091 looks like from outside) is detected by
    the worker itself: its probe never arrives, it exits, the supervisor restarts it and work proceeds."""
    from celery import Celery

    stack = make_stack("redis-postgres", supervise=True, ENDPOINTCTL_WORKER_STALL_TIMEOUT="8")
    api = Api(stack.url)
    wait_until(lambda: "watchdog: restarts this worker" in stack.worker.log_path.read_text(), timeout=60,
               what="the worker's watchdog to start")
    control = Celery(broker=stack.env["REDIS_URL"])
    try:
        # Remote control makes the live worker stop consuming its queue while staying connected.
        replies = control.control.cancel_consumer("endpointctl", reply=True, timeout=5)
        assert replies, "the worker answered the cancel_consumer request"
    finally:
        control.close()
    _create(api, "stalled", str(tiny_model_dir))
    time.sleep(1)
    assert api.state("stalled") == "pending"  # nothing consumes the reconcile while the consumer is cancelled
    wait_until(lambda: stack.worker.restarts >= 1, timeout=90, what="the supervisor to restart the stalled worker")
    assert "its consumer is stuck" in stack.worker.log_path.read_text()
    api.wait_state("stalled", "running", timeout=180)


def test_killed_replica_is_restarted_and_endpoint_returns_to_running(make_stack, tiny_model_dir):
    stack = make_stack()
    api = Api(stack.url)
    _create(api, "phoenix", str(tiny_model_dir))
    api.wait_state("phoenix", "running", timeout=180)
    key = _key(stack, "phoenix")
    state_file = next((stack.data_dir / "local-replicas" / key).glob("r*.json"))
    before = json.loads(state_file.read_text())
    os.kill(before["child_pid"], signal.SIGKILL)

    def restarted():
        state = json.loads(state_file.read_text())
        return state.get("restarts", 0) >= 1 and state.get("ready") and state
    after = wait_until(restarted, timeout=120, what="the supervisor to restart the runtime")
    assert after["child_pid"] != before["child_pid"]
    api.wait_state("phoenix", "running", timeout=120)
    assert len(replica_processes(stack.data_dir, key)["runtimes"]) == 1
    assert any(e["reason"] in ("Initializing", "Running") for e in api.events("phoenix"))


def test_missing_model_path_fails_with_a_message_that_says_so(make_stack, tmp_path):
    stack = make_stack()
    api = Api(stack.url)
    missing = tmp_path / "no-such-model"
    _create(api, "ghost", str(missing))
    body = api.wait_state("ghost", "failed", timeout=60)
    assert "does not exist" in body["status"]["message"] and str(missing) in body["status"]["message"]
    assert not any(replica_processes(stack.data_dir).values())
    assert any(e["type"] == "Warning" for e in api.events("ghost"))


def test_model_that_crashes_on_load_fails_with_a_one_line_cause(make_stack, tmp_path):
    stack = make_stack()
    api = Api(stack.url)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    _create(api, "broken", str(broken))
    body = api.wait_state("broken", "failed", timeout=240)
    message = body["status"]["message"]
    # One line, the cause (the JSON error); the traceback is in the replica's log only.
    assert "exited with code" in message and "model load failed: " in message and "\n" not in message, message
    assert "Traceback" not in message and "File \"" not in message, message
    wait_until(lambda: not replica_processes(stack.data_dir)["runtimes"], timeout=30, what="no runtime left running")
