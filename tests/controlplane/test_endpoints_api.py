"""The v2 endpoint routes on both databases: wire shape, merge semantics, desired state, delete, events, logs."""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from common.db import session_factory
from common.models import Endpoint, Event
from tests.controlplane.conftest import Api, payload, reconcile_ids

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _row(api: Api, namespace: str, name: str) -> Endpoint:
    with session_factory(api.settings)() as session:
        return session.scalar(select(Endpoint).where(Endpoint.namespace == namespace, Endpoint.name == name))


def test_create_returns_the_wire_object_and_enqueues(api: Api) -> None:
    body = payload("e1", tags=["dev"], route={"domain": "d.example", "path": "/p"}, cacheHttpResponses=True)
    body["model"]["image"] = {"custom": {"url": "vllm/vllm-openai:v0.23.0", "port": 8000, "healthRoute": "/ready"}}
    body["model"].update(command=["serve"], args=["--max-model-len", "4096"], env={"A": "1"})
    r = api.http.post("/v2/endpoint/admin", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    ep = r.json()
    assert ep["name"] == "e1" and ep["type"] == "authenticated" and ep["healthRoute"] == "/ready"
    assert ep["model"]["repository"] == "gpt2" and ep["model"]["framework"] == "pytorch"
    assert ep["model"]["revision"] is None and ep["model"]["task"] == "text-generation"
    assert ep["model"]["image"] == {"custom": {"url": "vllm/vllm-openai:v0.23.0", "port": 8000, "healthRoute": "/ready"}}
    assert ep["model"]["args"] == ["--max-model-len", "4096"] and ep["model"]["env"] == {"A": "1"}
    assert ep["compute"]["instanceType"] == "nvidia-a100" and ep["compute"]["instanceSize"] == "x2"
    assert ep["compute"]["scaling"] == {"minReplica": 1, "maxReplica": 2, "scaleToZeroTimeout": None}
    assert ep["provider"] == {"vendor": "aws", "region": "us-east-1"}
    assert ep["route"] == {"domain": "d.example", "path": "/p"} and ep["tags"] == ["dev"]
    assert ep["cacheHttpResponses"] is True
    status = ep["status"]
    assert status["state"] == "pending" and status["url"] is None and status["desiredState"] == "running"
    assert Z_TIME.match(status["createdAt"]) and Z_TIME.match(status["updatedAt"])
    assert status["createdBy"] == {"id": "admin", "name": "admin"} and status["readyReplica"] == 0
    row = _row(api, "admin", "e1")
    assert (row.generation, row.spec_revision, row.observed_generation, row.desired_state) == (1, 1, 0, "running")
    assert row.id in reconcile_ids(api.settings.redis_url)


def test_get_list_and_unknown(api: Api) -> None:
    for name in ("b", "a"):
        assert api.http.post("/v2/endpoint/admin", json=payload(name), headers=api.admin).status_code == 201
    assert api.http.get("/v2/endpoint/admin/a", headers=api.admin).json()["name"] == "a"
    items = api.http.get("/v2/endpoint/admin", headers=api.admin).json()["items"]
    assert [i["name"] for i in items] == ["a", "b"]
    page = api.http.get("/v2/endpoint/admin?limit=1&offset=1", headers=api.admin).json()["items"]
    assert [i["name"] for i in page] == ["b"]
    r = api.http.get("/v2/endpoint/admin/nope", headers=api.admin)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    assert api.http.get("/v2/endpoint/other-empty", headers=api.admin).json() == {"items": []}


def test_status_comes_from_the_worker_columns(api: Api, set_status) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("s"), headers=api.admin)
    set_status("admin", "s", state="running", url="http://cp/endpoints/admin/s", ready_replicas=2,
               target_replicas=2, message="ok", conditions=[{"type": "Ready", "status": "True", "reason": "Serving",
                                                             "message": "", "lastTransitionTime": "x"}])
    status = api.http.get("/v2/endpoint/admin/s", headers=api.admin).json()["status"]
    assert status["state"] == "running" and status["url"] == "http://cp/endpoints/admin/s"
    assert status["readyReplica"] == 2 and status["targetReplica"] == 2 and status["message"] == "ok"
    assert status["conditions"][0]["type"] == "Ready"


def test_update_merges_only_the_fields_sent(api: Api) -> None:
    body = payload("u")
    body["model"]["env"] = {"A": "1"}
    body["model"]["secrets"] = {"S": "hidden-value"}
    api.http.post("/v2/endpoint/admin", json=body, headers=api.admin)
    before = _row(api, "admin", "u")

    r = api.http.put("/v2/endpoint/admin/u", headers=api.admin, json={
        "compute": {"scaling": {"maxReplica": 3, "minReplica": 0, "scaleToZeroTimeout": 30,
                                "measure": {"hardwareUsage": 80}}}})
    assert r.status_code == 200, r.text
    ep = r.json()
    assert ep["compute"]["scaling"] == {"minReplica": 0, "maxReplica": 3, "scaleToZeroTimeout": 30,
                                        "measure": {"hardwareUsage": 80}}
    assert ep["compute"]["instanceType"] == "nvidia-a100" and ep["model"]["env"] == {"A": "1"}
    row = _row(api, "admin", "u")
    # Scaling is not a new revision of what the replicas run, but it is a new generation.
    assert row.generation == before.generation + 1 and row.spec_revision == before.spec_revision
    assert row.secrets == {"S": "hidden-value"}

    r = api.http.put("/v2/endpoint/admin/u", headers=api.admin, json={"model": {"revision": "abc"}})
    assert r.json()["model"]["revision"] == "abc" and r.json()["model"]["repository"] == "gpt2"
    row2 = _row(api, "admin", "u")
    assert row2.spec_revision == row.spec_revision + 1 and row2.generation == row.generation + 1

    # Secrets changes roll out too; a changed instance implies its accelerator.
    r = api.http.put("/v2/endpoint/admin/u", headers=api.admin,
                     json={"model": {"secrets": {"S": "new"}}, "compute": {"instanceType": "intel-icl",
                                                                            "instanceSize": "x1"}})
    assert r.status_code == 200, r.text
    assert r.json()["compute"]["accelerator"] == "cpu"
    row3 = _row(api, "admin", "u")
    assert row3.secrets == {"S": "new"} and row3.spec_revision == row2.spec_revision + 1

    # An update that changes nothing bumps nothing.
    api.http.put("/v2/endpoint/admin/u", headers=api.admin, json={"tags": []})
    assert _row(api, "admin", "u").generation == row3.generation

    # Validation applies to the merged result.
    r = api.http.put("/v2/endpoint/admin/u", headers=api.admin, json={"compute": {"scaling": {"minReplica": 9}}})
    assert r.status_code == 400 and "minReplica" in r.json()["error"]
    assert api.http.put("/v2/endpoint/admin/nope", headers=api.admin, json={}).status_code == 404


def test_registry_password_is_kept_but_never_returned(api: Api) -> None:
    body = payload("cr")
    body["model"]["image"] = {"custom": {"url": "registry.example/img:1", "credentials": {"username": "u",
                                                                                         "password": "pw-secret"}}}
    r = api.http.post("/v2/endpoint/admin", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    assert "pw-secret" not in r.text and r.json()["model"]["image"]["custom"]["credentials"] == {"username": "u"}
    # Echoing the returned image back keeps the stored password.
    image = r.json()["model"]["image"]
    image["custom"]["port"] = 9000
    r = api.http.put("/v2/endpoint/admin/cr", headers=api.admin, json={"model": {"image": image}})
    assert r.status_code == 200 and "pw-secret" not in r.text
    assert _row(api, "admin", "cr").image_credentials == {"username": "u", "password": "pw-secret"}


def test_pause_resume_scale_to_zero_set_desired_state(api: Api, set_status) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("p"), headers=api.admin)
    gen = _row(api, "admin", "p").generation
    r = api.http.post("/v2/endpoint/admin/p/pause", headers=api.admin)
    assert r.status_code == 200 and r.json()["status"]["desiredState"] == "paused"
    assert _row(api, "admin", "p").generation == gen + 1
    r = api.http.post("/v2/endpoint/admin/p/scale-to-zero", headers=api.admin)
    assert r.status_code == 400 and "paused" in r.json()["error"]
    r = api.http.post("/v2/endpoint/admin/p/resume", headers=api.admin)
    assert r.status_code == 200 and r.json()["status"]["desiredState"] == "running"
    r = api.http.post("/v2/endpoint/admin/p/scale-to-zero", headers=api.admin)
    assert r.json()["status"]["desiredState"] == "scaledToZero"
    set_status("admin", "p", state="scaledToZero", desired_replicas=0)
    r = api.http.post("/v2/endpoint/admin/p/resume", headers=api.admin)
    assert r.status_code == 200 and _row(api, "admin", "p").desired_replicas is None
    set_status("admin", "p", state="running")
    r = api.http.post("/v2/endpoint/admin/p/resume", headers=api.admin)
    assert r.status_code == 400 and "already running" in r.text
    row = _row(api, "admin", "p")
    assert row.generation == gen + 4
    assert reconcile_ids(api.settings.redis_url).count(row.id) >= 5


def test_delete_hides_the_endpoint_and_blocks_the_name_until_removed(api: Api) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("d"), headers=api.admin)
    row_id = _row(api, "admin", "d").id
    r = api.http.delete("/v2/endpoint/admin/d", headers=api.admin)
    assert r.status_code == 202 and r.json()["status"]["desiredState"] == "deleted"
    assert api.http.get("/v2/endpoint/admin/d", headers=api.admin).status_code == 404
    assert api.http.get("/v2/endpoint/admin", headers=api.admin).json()["items"] == []
    assert api.http.delete("/v2/endpoint/admin/d", headers=api.admin).status_code == 404
    assert api.http.post("/v2/endpoint/admin/d/pause", headers=api.admin).status_code == 404
    r = api.http.post("/v2/endpoint/admin", json=payload("d"), headers=api.admin)
    assert r.status_code == 409 and "being deleted" in r.json()["error"]
    assert reconcile_ids(api.settings.redis_url).count(row_id) == 2
    # The worker removes the row last; events survive with endpoint_id set to NULL.
    with session_factory(api.settings)() as session:
        session.execute(delete(Endpoint).where(Endpoint.id == row_id))
        session.commit()
        orphans = session.scalars(select(Event).where(Event.endpoint_name == "d")).all()
        assert orphans and all(e.endpoint_id is None for e in orphans)
    assert api.http.post("/v2/endpoint/admin", json=payload("d"), headers=api.admin).status_code == 201


def test_events_newest_first_and_paged(api: Api) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("ev"), headers=api.admin)
    for _ in range(3):
        api.http.post("/v2/endpoint/admin/ev/pause", headers=api.admin)
        api.http.post("/v2/endpoint/admin/ev/resume", headers=api.admin)
    first = api.http.get("/v2/endpoint/admin/ev/events?limit=4", headers=api.admin).json()
    assert [e["reason"] for e in first["items"]] == ["ResumeRequested", "PauseRequested"] * 2
    assert first["nextBefore"] is not None and Z_TIME.match(first["items"][0]["createdAt"])
    rest = api.http.get(f"/v2/endpoint/admin/ev/events?limit=4&before={first['nextBefore']}", headers=api.admin).json()
    assert [e["reason"] for e in rest["items"]] == ["ResumeRequested", "PauseRequested", "Created"]
    assert rest["nextBefore"] is None
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True)


def test_logs_answer_503_when_the_provider_layer_is_unavailable(api: Api) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("lg"), headers=api.admin)
    r = api.http.get("/v2/endpoint/admin/lg/logs", headers=api.admin)
    assert r.status_code == 503 and "logs are unavailable" in r.json()["error"]
    assert api.http.get("/v2/endpoint/admin/nope/logs", headers=api.admin).status_code == 404


def test_hardware_catalog_and_quota(api: Api) -> None:
    api.http.post("/v2/endpoint/admin", json=payload("hw"), headers=api.admin)
    body = api.http.get("/v2/provider/admin", headers=api.admin).json()
    vendors = {v["name"]: v for v in body["vendors"]}
    assert {"aws", "local"} <= set(vendors)
    computes = {c["id"]: c for r in vendors["aws"]["regions"] if r["name"] == "us-east-1" for c in r["computes"]}
    a100 = computes["aws-us-east-1-nvidia-a100-x2"]
    assert a100["numAccelerators"] == 2 and a100["accelerator"] == "gpu" and a100["quota"]["usedAccelerators"] == 2
    for itype in ("intel-icl", "nvidia-t4", "nvidia-l4", "nvidia-a10g", "nvidia-a100", "nvidia-h100"):
        assert any(c["instanceType"] == itype for c in computes.values())
    assert "gpuProduct" not in a100


def test_logs_come_from_the_provider_with_secrets_masked(api: Api) -> None:
    """The real local provider reads its replicas' log files; a container echoing a secret gets it masked."""
    from fastapi.testclient import TestClient

    from controlplane.app import create_app

    # payload() asks for a GPU type: the local provider on this GPU-less machine runs it only when emulation is on.
    settings = api.settings.model_copy(update={"provider": "local", "local_gpu_emulation": True})
    body = payload("lg2")
    body["model"]["secrets"] = {"HF_TOKEN": "hf_live_secret_123"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        assert http.post("/v2/endpoint/admin", json=body, headers=api.admin).status_code == 201
        key = _row(api, "admin", "lg2").provider_key
        r = http.get("/v2/endpoint/admin/lg2/logs", headers=api.admin)
        assert r.status_code == 200 and r.text == ""  # no replica has run yet
        directory = settings.data_dir / "local-replicas" / key
        directory.mkdir(parents=True)
        (directory / "r0.log").write_text("booting\nenv HF_TOKEN=hf_live_secret_123\nready\n")
        r = http.get("/v2/endpoint/admin/lg2/logs?tail=2", headers=api.admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.text == "env HF_TOKEN=********\nready\n"
