"""Namespaces exist only once created: `POST /api/namespaces` (admin) or minting a user's token; `GET` lists the
ones a token can act in. Before, the admin creating an endpoint in a mistyped namespace made a new one silently."""

from __future__ import annotations

import pytest

from tests.controlplane.conftest import Api, payload


def test_admin_cannot_create_an_endpoint_in_a_namespace_nobody_created(api: Api) -> None:
    r = api.http.post("/v2/endpoint/nobody", json=payload("e1"), headers=api.admin)
    assert r.status_code == 404, r.text
    assert "namespace 'nobody' does not exist" in r.json()["error"] and "namespace create nobody" in r.json()["error"]
    assert api.http.get("/v2/endpoint/nobody/e1", headers=api.admin).status_code == 404
    assert "nobody" not in [n["name"] for n in api.http.get("/api/namespaces", headers=api.admin).json()["items"]]

    r = api.http.post("/api/namespaces", json={"name": "nobody"}, headers=api.admin)
    assert r.status_code == 201 and r.json() == {"name": "nobody", "kind": "org"}, r.text
    assert api.http.post("/v2/endpoint/nobody", json=payload("e1"), headers=api.admin).status_code == 201


def test_the_admins_own_namespace_and_minted_users_exist(api: Api) -> None:
    assert api.http.post("/v2/endpoint/admin", json=payload("e1"), headers=api.admin).status_code == 201
    api.mint("carol", orgs=["team"])
    for ns in ("carol", "team"):
        assert api.http.post(f"/v2/endpoint/{ns}", json=payload("e1"), headers=api.admin).status_code == 201, ns


def test_listing_shows_what_the_token_can_act_in(api: Api) -> None:
    alice = api.mint("alice", orgs=["acme"])
    api.mint("bob")
    assert api.http.post("/api/namespaces", json={"name": "solo", "kind": "user"}, headers=api.admin).status_code == 201
    assert api.http.get("/api/namespaces", headers=alice).json() == {
        "items": [{"name": "alice", "kind": "user"}, {"name": "acme", "kind": "org"}]}
    everything = api.http.get("/api/namespaces", headers=api.admin).json()["items"]
    assert [n["name"] for n in everything] == ["acme", "admin", "alice", "bob", "solo"]
    assert {"name": "acme", "kind": "org"} in everything and {"name": "solo", "kind": "user"} in everything


def test_only_the_admin_creates_namespaces_and_only_once(api: Api) -> None:
    alice = api.mint("alice")
    r = api.http.post("/api/namespaces", json={"name": "mine"}, headers=alice)
    assert r.status_code == 403 and "admin" in r.json()["error"], r.text
    assert api.http.post("/api/namespaces", json={"name": "mine"}, headers={}).status_code == 401
    for existing in ("alice", "admin"):
        r = api.http.post("/api/namespaces", json={"name": existing}, headers=api.admin)
        assert r.status_code == 409 and "already exists" in r.json()["error"], r.text
    # A user namespace created here takes tokens; an organisation does not (tokens belong to users).
    assert api.http.post("/api/namespaces", json={"name": "dave", "kind": "user"}, headers=api.admin).status_code == 201
    api.mint("dave")
    assert api.http.post("/api/namespaces", json={"name": "corp"}, headers=api.admin).status_code == 201
    r = api.http.post("/api/tokens", json={"namespace": "corp"}, headers=api.admin)
    assert r.status_code == 400 and "organisation" in r.json()["error"], r.text


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "-x"}, {"name": "a" * 64}, {"name": "a b"}, {"name": "../etc"}, {"name": "é"},
    {"name": "x\r\nSet-Cookie: a=b"}, {"name": 3}, {"name": None}, {"name": ["x"]}, {"name": "ok", "kind": "team"},
    {"name": "ok", "kind": None}, [], "x", None,
])
def test_bad_namespace_bodies_are_clear_4xx(api: Api, body: object) -> None:
    r = api.http.post("/api/namespaces", json=body, headers=api.admin)
    # 422: not the shape of the body; 400: a name that breaks the naming rule (as for tokens and endpoints).
    assert r.status_code in (400, 422), (body, r.status_code, r.text)
    assert "error" in r.json()
    assert "\r" not in "".join(r.headers.values()) and "Set-Cookie" not in r.headers
    assert "ok" not in [n["name"] for n in api.http.get("/api/namespaces", headers=api.admin).json()["items"]]


def test_bad_namespace_content_types(api: Api) -> None:
    r = api.http.post("/api/namespaces", content=b"{not json", headers={**api.admin, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    r = api.http.post("/api/namespaces", content=b"name=x", headers={**api.admin, "content-type": "text/plain"})
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize("replica", ["", "a b", "../r1", "-r", "x" * 254, "r1\n", "r1;rm"])
def test_logs_replica_filter_rejects_bad_names(api: Api, replica: str) -> None:
    assert api.http.post("/v2/endpoint/admin", json=payload("e1"), headers=api.admin).status_code == 201
    r = api.http.get("/v2/endpoint/admin/e1/logs", params={"replica": replica}, headers=api.admin)
    assert r.status_code == 422 and "replica" in r.json()["error"], (replica, r.text)


@pytest.mark.parametrize("since", ["0", "-5", "abc", "1.5", str(10 * 365 * 86400 + 1), "9" * 30])
def test_logs_since_rejects_bad_durations(api: Api, since: str) -> None:
    assert api.http.post("/v2/endpoint/admin", json=payload("e1"), headers=api.admin).status_code == 201
    r = api.http.get("/v2/endpoint/admin/e1/logs", params={"since": since}, headers=api.admin)
    assert r.status_code == 422 and "since" in r.json()["error"], (since, r.text)
