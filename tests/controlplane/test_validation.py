"""Every validation error of the create/update contract: a clear 4xx with an `error` string, never a 500."""

from __future__ import annotations

import copy

import pytest

from tests.controlplane.conftest import Api, payload


def _create(api: Api, body: object, **kwargs: object):
    return api.http.post("/v2/endpoint/admin", json=body, headers=api.admin, **kwargs)


def _with(path: str, value: object, name: str = "v") -> dict:
    body = copy.deepcopy(payload(name))
    *parents, leaf = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    target[leaf] = value
    return body


@pytest.mark.parametrize("name", ["UPPER", "under_score", "-lead", "trail-", "a" * 33, "", "dots.no", "ünï", "a b"])
def test_names_must_be_dns_labels(api: Api, name: str) -> None:
    r = _create(api, payload(name))
    assert r.status_code == 400, r.text
    assert "DNS label" in r.json()["error"] and r.json()["param"] == "name"


def test_longest_valid_name(api: Api) -> None:
    assert _create(api, payload("a" * 32)).status_code == 201
    assert _create(api, payload("0-9")).status_code == 201


def test_duplicate_name_is_409(api: Api) -> None:
    assert _create(api, payload("dup")).status_code == 201
    r = _create(api, payload("dup"))
    assert r.status_code == 409 and "already exists" in r.json()["error"]


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("provider.vendor", "azure", ["unknown vendor", "aws", "local"]),
    ("provider.region", "mars-1", ["unknown region", "us-east-1"]),
    ("compute.instanceType", "nvidia-b200", ["unknown instance type", "nvidia-a100", "intel-icl"]),
    ("compute.instanceSize", "x3", ["unknown instance size", "x1", "x2", "x4", "x8"]),
    ("compute.accelerator", "cpu", ["does not match"]),
])
def test_unknown_hardware_names_the_valid_choices(api: Api, path: str, value: str, expected: list[str]) -> None:
    r = _create(api, _with(path, value))
    assert r.status_code == 400, r.text
    for text in expected:
        assert text in r.json()["error"]


@pytest.mark.parametrize(("scaling", "param"), [
    ({"minReplica": 3, "maxReplica": 2}, "compute.scaling.minReplica"),
    ({"minReplica": -1, "maxReplica": 2}, "compute.scaling.minReplica"),
    ({"minReplica": 0, "maxReplica": 0}, "compute.scaling.maxReplica"),
    ({"minReplica": 0, "maxReplica": 100000}, "compute.scaling.maxReplica"),
    ({"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": -5}, "compute.scaling.scaleToZeroTimeout"),
    ({"minReplica": 1, "maxReplica": 1, "measure": {"qps": 3}}, "compute.scaling.measure"),
    ({"minReplica": 1, "maxReplica": 1, "measure": {"pendingRequests": 1, "hardwareUsage": 2}},
     "compute.scaling.measure"),
    ({"minReplica": 1, "maxReplica": 1, "measure": {"hardwareUsage": 180}}, "compute.scaling.measure.hardwareUsage"),
    ({"minReplica": 1, "maxReplica": 1, "measure": {"pendingRequests": -1}}, "compute.scaling.measure.pendingRequests"),
])
def test_scaling_bounds(api: Api, scaling: dict, param: str) -> None:
    r = _create(api, _with("compute.scaling", scaling))
    assert r.status_code == 400, r.text
    assert r.json()["param"] == param and r.json()["error"]


def test_scale_to_zero_timeout_zero_and_null_are_fine(api: Api) -> None:
    assert _create(api, _with("compute.scaling", {"minReplica": 0, "maxReplica": 1, "scaleToZeroTimeout": 0},
                              "z0")).status_code == 201
    assert _create(api, _with("compute.scaling", {"minReplica": 0, "maxReplica": 1, "scaleToZeroTimeout": None,
                                                  "measure": {"pendingRequests": None}}, "z1")).status_code == 201


@pytest.mark.parametrize(("image", "text"), [
    ({"custom": {"port": 80}}, "url is required"),
    ({"huggingface": {}, "tgi": {}}, "exactly one key"),
    ({}, "exactly one key"),
    ({"docker": {"url": "x"}}, "unknown model.image variant"),
    ({"custom": {"url": "x", "port": 70000}}, "port"),
    ({"custom": {"url": "x", "healthRoute": "health"}}, "must start with '/'"),
    ({"vLLM": {"tensorParallelSize": 0}}, "tensorParallelSize"),
    ({"tgi": {"credentials": {"username": "u"}}}, "only allowed for a custom image"),
])
def test_image_union(api: Api, image: dict, text: str) -> None:
    r = _create(api, _with("model.image", image))
    assert r.status_code == 400, r.text
    assert text in r.json()["error"]


@pytest.mark.parametrize(("path", "value", "text"), [
    ("model.repository", "", "model.repository is required"),
    ("model.framework", "", "model.framework is required"),
    ("model.env", {"1BAD": "x"}, "not a valid environment variable name"),
    ("model.secrets", {"BAD NAME": "x"}, "not a valid environment variable name"),
    ("route", {"path": "no-slash"}, "must start with '/'"),
    ("tags", [""], "tags"),
    ("model.revision", "x" * 2000, "longer than"),
    ("model.repository", "a\x00b", "NUL"),
])
def test_other_fields(api: Api, path: str, value: object, text: str) -> None:
    r = _create(api, _with(path, value))
    assert r.status_code == 400, r.text
    assert text in r.json()["error"]


def test_env_and_secrets_may_not_share_names(api: Api) -> None:
    body = payload("clash")
    body["model"].update(env={"K": "1"}, secrets={"K": "2"})
    r = _create(api, body)
    assert r.status_code == 400 and "both set K" in r.json()["error"]


def test_bad_json_is_422(api: Api) -> None:
    r = api.http.post("/v2/endpoint/admin", content=b'{"name": "x",', headers={**api.admin,
                                                                              "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "request body is not valid JSON"


@pytest.mark.parametrize("body", [
    [], "x", 3, None, {"name": "x"},
    _with("compute.scaling", {"minReplica": "many"}),
    _with("compute", "gpu"),
    _with("model.env", {"A": 1}),
    _with("type", "secret"),
    _with("tags", "dev"),
    _with("compute.scaling", {"measure": {"pendingRequests": "NaN"}}),
])
def test_wrong_shapes_are_422_with_an_error_string(api: Api, body: object) -> None:
    r = _create(api, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request") and r.json()["detail"]


def test_nan_and_infinity_are_refused(api: Api) -> None:
    raw = (b'{"name":"nan","type":"public","provider":{"vendor":"aws","region":"us-east-1"},'
           b'"compute":{"accelerator":"gpu","instanceType":"nvidia-a100","instanceSize":"x2",'
           b'"scaling":{"minReplica":1,"maxReplica":1,"measure":{"pendingRequests":NaN}}},'
           b'"model":{"repository":"gpt2","framework":"pytorch","image":{"huggingface":{}}}}')
    r = api.http.post("/v2/endpoint/admin", content=raw, headers={**api.admin, "content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_protected_is_an_alias_of_authenticated(api: Api) -> None:
    r = _create(api, _with("type", "protected", "prot"))
    assert r.status_code == 201 and r.json()["type"] == "authenticated"
    r = api.http.put("/v2/endpoint/admin/prot", headers=api.admin, json={"type": "public"})
    assert r.json()["type"] == "public"


def test_update_shape_errors(api: Api) -> None:
    _create(api, payload("upd"))
    r = api.http.put("/v2/endpoint/admin/upd", headers=api.admin, json={"compute": {"scaling": {"maxReplica": "x"}}})
    assert r.status_code == 422
    r = api.http.put("/v2/endpoint/admin/upd", headers=api.admin, json={"provider": {"vendor": "nope"}})
    assert r.status_code == 400 and "unknown vendor" in r.json()["error"]
    r = api.http.put("/v2/endpoint/admin/upd", headers=api.admin, json={"model": {"image": {"a": {}, "b": {}}}})
    assert r.status_code == 400


def test_query_and_path_parameters(api: Api) -> None:
    assert api.http.get("/v2/endpoint/admin?limit=0", headers=api.admin).status_code == 422
    assert api.http.get("/v2/endpoint/admin?offset=-1", headers=api.admin).status_code == 422
    assert api.http.get("/v2/endpoint/bad%20ns", headers=api.admin).status_code == 400
    assert api.http.get("/v2/endpoint/" + "n" * 200, headers=api.admin).status_code == 400
    assert api.http.delete("/api/tokens/99999999999999999999999", headers=api.admin).status_code == 422
    r = api.http.get("/no/such/route", headers=api.admin)
    assert r.status_code == 404 and r.json()["error"]
    r = api.http.patch("/v2/endpoint/admin/x", headers=api.admin)
    assert r.status_code == 405 and r.json()["error"]
