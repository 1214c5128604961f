"""Hostile create/update bodies against the real API (TestClient over the app, SQLite and PostgreSQL): every one is
a clear 4xx naming the parameter, nothing is stored, and nothing the tenant sent comes back raw."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient

from tests.controlplane.conftest import ADMIN_TOKEN, Api, payload

# The exact payload that ran a command as root on the host through the supervisor's Python.
HOST_RCE_ENV = {"PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": "/bin/sh -c 'id > /tmp/pwn' #%s"}


def _model(**model: object) -> dict:
    body = copy.deepcopy(payload("hostile"))
    body["model"].update(model)
    return body


def _create(api: Api, body: dict, namespace: str = "admin"):
    return api.http.post(f"/v2/endpoint/{namespace}", json=body, headers=api.admin)


def _count(api: Api) -> int:
    return len(api.http.get("/v2/endpoint/admin", headers=api.admin).json()["items"])


@pytest.mark.parametrize("field", ["env", "secrets"])
@pytest.mark.parametrize("name", [*HOST_RCE_ENV, "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH",
                                  "PYTHONHOME", "PYTHONSTARTUP", "BASH_ENV", "ENV", "NODE_OPTIONS", "PERL5OPT",
                                  "GCONV_PATH", "HF_HOME", "ld_preload", "PYTHONWARNINGS"])
def test_interpreter_and_loader_variables_are_refused(api: Api, field: str, name: str) -> None:
    value = HOST_RCE_ENV.get(name, "/tmp/x")
    r = _create(api, _model(**{field: {name: value}}))
    assert r.status_code == 422, r.text
    assert name in r.json()["error"] and r.json()["param"] == f"model.{field}.{name}"
    assert _count(api) == 0


def test_the_found_payload_is_refused_on_update_too(api: Api) -> None:
    assert _create(api, payload("ok")).status_code == 201
    r = api.http.put("/v2/endpoint/admin/ok", json={"model": {"env": HOST_RCE_ENV}}, headers=api.admin)
    assert r.status_code == 422, r.text
    stored = api.http.get("/v2/endpoint/admin/ok", headers=api.admin).json()
    assert not (stored["model"].get("env") or {})


@pytest.mark.parametrize("name", ["PORT", "HOSTNAME", "ENDPOINTCTL_ADMIN_TOKEN", "ENDPOINTCTL_REPLICA"])
def test_provider_owned_variables_are_refused(api: Api, name: str) -> None:
    r = _create(api, _model(env={name: "0.0.0.0"}))
    assert r.status_code == 422 and name in r.json()["error"], r.text


def test_model_id_only_as_the_platform_value(api: Api) -> None:
    assert _create(api, _model(env={"MODEL_ID": "/etc"})).status_code == 422
    body = _model(env={"MODEL_ID": "/repository", "MAX_INPUT_TOKENS": "512"})
    assert _create(api, body).status_code == 201


@pytest.mark.parametrize("args", [["--hostname", "0.0.0.0"], ["--hostname=0.0.0.0"], ["--host", "0.0.0.0"],
                                  ["--port", "1"], ["--model-id", "/etc"], ["--model=/etc"],
                                  ["--max-input-tokens", "8", "--port=9"]])
def test_provider_owned_flags_are_refused(api: Api, args: list[str]) -> None:
    r = _create(api, _model(args=args))
    assert r.status_code == 422, r.text
    assert r.json()["param"] == "model.args"


def test_ordinary_runtime_flags_are_accepted(api: Api) -> None:
    assert _create(api, _model(args=["--max-input-tokens", "512", "--speculate=0"])).status_code == 201


@pytest.mark.parametrize(("namespace", "name", "env_name"), [
    ("admin", "nl\n", None), ("admin", "nl\r\n", None), ("admin", "ok", "FOO\n")])
def test_trailing_newlines_are_not_names(api: Api, namespace: str, name: str, env_name: str | None) -> None:
    body = payload(name)
    if env_name:
        body["model"]["env"] = {env_name: "1"}
    r = _create(api, body, namespace)
    assert r.status_code == 400, r.text
    assert _count(api) == 0


def test_namespace_with_a_trailing_newline_is_refused(api: Api) -> None:
    r = api.http.post("/api/tokens", json={"namespace": "carol\n", "name": "t"}, headers=api.admin)
    assert r.status_code == 400, r.text
    r = api.http.post("/v2/endpoint/carol%0A", json=payload("x"), headers=api.admin)
    assert 400 <= r.status_code < 500, r.text


def test_a_thousand_replicas_are_refused(api: Api) -> None:
    body = payload("big")
    body["compute"]["scaling"] = {"minReplica": 1000, "maxReplica": 1000}
    r = _create(api, body)
    assert r.status_code == 400 and "maxReplica" in r.json()["error"], r.text


@pytest.mark.parametrize(("field", "value"), [
    ("env", {"BIG": "x" * 5_000_000}), ("env", {"BIG": "x" * 200_000}), ("secrets", {"TOKEN": "s" * 200_000}),
    ("env", {f"V{i}": "1" for i in range(500)}), ("args", ["--speculate", "0", "y" * 5_000_000]),
    ("args", ["-v"] * 5000), ("command", ["python", "z" * 100_000])])
def test_oversized_env_and_args_are_refused_not_echoed(api: Api, field: str, value: object) -> None:
    r = _create(api, _model(**{field: value}))
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 2000, "the error must not echo the oversized value"
    assert _count(api) == 0


def test_oversized_private_service_is_refused(api: Api) -> None:
    r = _create(api, payload("ps", privateService={"accountId": "a" * 3_000_000}))
    assert r.status_code == 422 and r.json()["param"] == "privateService", r.text[:300]
    assert len(r.content) < 2000


def _app_with(api: Api, **settings: object) -> TestClient:
    from controlplane.app import create_app

    return TestClient(create_app(api.settings.model_copy(update=settings)), raise_server_exceptions=False)


def test_namespace_accelerator_quota(api: Api) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with _app_with(api, max_accelerators_per_namespace=6) as http:
        user = http.post("/api/tokens", json={"namespace": "quota-user"}, headers=admin).json()["token"]
        bearer = {"authorization": f"Bearer {user}"}
        body = payload("q1")  # nvidia-a100 x2 at maxReplica 2: 4 accelerators
        assert http.post("/v2/endpoint/quota-user", json=body, headers=bearer).status_code == 201
        r = http.post("/v2/endpoint/quota-user", json=payload("q2"), headers=bearer)
        assert r.status_code == 403 and "quota exceeded" in r.json()["error"], r.text
        assert "4" in r.json()["error"] and "6" in r.json()["error"]
        # Raising the existing endpoint past the quota is refused as well; lowering it is not.
        r = http.put("/v2/endpoint/quota-user/q1", json={"compute": {"scaling": {"maxReplica": 4}}}, headers=bearer)
        assert r.status_code == 403, r.text
        r = http.put("/v2/endpoint/quota-user/q1", json={"compute": {"scaling": {"maxReplica": 1}}}, headers=bearer)
        assert r.status_code == 200, r.text
        assert http.post("/v2/endpoint/quota-user", json=payload("q2"), headers=bearer).status_code == 201
        # Other namespaces have their own quota.
        assert http.post("/v2/endpoint/admin", json=payload("q3"), headers=admin).status_code == 201


def test_namespace_endpoint_count_quota(api: Api) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with _app_with(api, max_endpoints_per_namespace=2) as http:
        cpu = {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1"}
        for name in ("c1", "c2"):
            body = payload(name)
            body["compute"].update(cpu)
            assert http.post("/v2/endpoint/admin", json=body, headers=admin).status_code == 201
        body = payload("c3")
        body["compute"].update(cpu)
        r = http.post("/v2/endpoint/admin", json=body, headers=admin)
        assert r.status_code == 403 and "quota exceeded" in r.json()["error"], r.text


def test_limits_are_settings(api: Api) -> None:
    with _app_with(api, max_env_bytes=100, max_replicas=3) as http:
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        body = _model(env={"A": "x" * 200})
        assert http.post("/v2/endpoint/admin", json=body, headers=admin).status_code == 422
        body = payload("r4")
        body["compute"]["scaling"] = {"minReplica": 1, "maxReplica": 4}
        r = http.post("/v2/endpoint/admin", json=body, headers=admin)
        assert r.status_code == 400 and "between 1 and 3" in r.json()["error"], r.text
