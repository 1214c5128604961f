"""Tokens, whoami and namespace isolation (404 for any namespace the token does not hold, as for one that does not
exist), secret redaction."""

from __future__ import annotations

import hashlib
import logging

import pytest
from sqlalchemy import select

from common.db import session_factory
from common.models import ApiToken, Endpoint, Event
from tests.controlplane.conftest import Api, payload


def test_missing_and_bad_tokens_are_401(api: Api) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Bearer epc_" + "x" * 43},
                    {"authorization": "Basic abc"}):
        r = api.http.get("/v2/endpoint/admin", headers=headers)
        assert r.status_code == 401 and r.json()["error"], headers
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.http.get("/api/whoami-v2").status_code == 401
    # Authentication comes before the body is validated: no token and an invalid body is a 401, not a 422.
    assert api.http.post("/v2/endpoint/admin", json={"name": 3}).status_code == 401
    assert api.http.post("/v2/endpoint/admin", json={}, headers={"authorization": "Bearer epc_unknown"}
                         ).status_code == 401


def test_whoami(api: Api) -> None:
    assert api.http.get("/api/whoami-v2", headers=api.admin).json()["name"] == "admin"
    me = api.http.get("/api/whoami-v2", headers=api.mint("alice", orgs=["acme", "beta"])).json()
    assert me["type"] == "user" and me["name"] == "alice" and me["orgs"] == [{"name": "acme"}, {"name": "beta"}]


def test_tokens_are_hashed_shown_once_listed_without_secret_and_revocable(api: Api) -> None:
    r = api.http.post("/api/tokens", json={"namespace": "bob", "name": "laptop"}, headers=api.admin)
    assert r.status_code == 201
    created = r.json()
    raw = created["token"]
    assert raw.startswith("epc_") and created["prefix"] == raw[:10] and created["namespace"] == "bob"
    with session_factory(api.settings)() as session:
        stored = session.scalar(select(ApiToken).where(ApiToken.id == created["id"]))
        assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    bob = {"authorization": f"Bearer {raw}"}
    # Any token mints more for its own namespace, but not for others and not memberships.
    r = api.http.post("/api/tokens", json={"name": "ci"}, headers=bob)
    assert r.status_code == 201 and r.json()["namespace"] == "bob"
    second = {"authorization": f"Bearer {r.json()['token']}"}
    assert api.http.post("/api/tokens", json={"namespace": "carol"}, headers=bob).status_code == 403
    assert api.http.post("/api/tokens", json={"namespace": "bob", "orgs": ["acme"]}, headers=bob).status_code == 403
    listing = api.http.get("/api/tokens", headers=bob)
    assert listing.status_code == 200 and raw not in listing.text and "token_hash" not in listing.text
    assert [t["name"] for t in listing.json()["items"]] == ["laptop", "ci"]
    api.mint("carol")
    assert len(api.http.get("/api/tokens", headers=api.admin).json()["items"]) == 3
    # Revoke: own tokens only (others look absent), the admin may revoke any.
    carol_id = [t["id"] for t in api.http.get("/api/tokens", headers=api.admin).json()["items"]
                if t["namespace"] == "carol"][0]
    assert api.http.delete(f"/api/tokens/{carol_id}", headers=bob).status_code == 404
    r = api.http.delete(f"/api/tokens/{created['id']}", headers=second)
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert api.http.get("/api/whoami-v2", headers=bob).status_code == 401
    assert api.http.get("/api/whoami-v2", headers=second).status_code == 200


def test_org_and_user_namespaces_do_not_mix(api: Api) -> None:
    api.mint("alice", orgs=["acme"])
    r = api.http.post("/api/tokens", json={"namespace": "acme"}, headers=api.admin)
    assert r.status_code == 400 and "organisation" in r.json()["error"]
    r = api.http.post("/api/tokens", json={"namespace": "bad name"}, headers=api.admin)
    assert r.status_code == 400


def test_namespace_isolation(api: Api) -> None:
    alice = api.mint("alice", orgs=["acme"])
    bob = api.mint("bob")
    assert api.http.post("/v2/endpoint/alice", json=payload("a1"), headers=alice).status_code == 201
    assert api.http.post("/v2/endpoint/acme", json=payload("o1"), headers=alice).status_code == 201
    assert api.http.post("/v2/endpoint/bob", json=payload("b1"), headers=bob).status_code == 201
    # Bob reaches nothing of alice's or acme's, existing or not, with any verb: always the 404 of a missing one.
    calls = [("GET", "/v2/endpoint/alice"), ("GET", "/v2/endpoint/alice/a1"), ("GET", "/v2/endpoint/alice/none"),
             ("PUT", "/v2/endpoint/alice/a1"), ("DELETE", "/v2/endpoint/alice/a1"),
             ("POST", "/v2/endpoint/alice/a1/pause"), ("POST", "/v2/endpoint/alice/a1/resume"),
             ("POST", "/v2/endpoint/alice/a1/scale-to-zero"), ("GET", "/v2/endpoint/alice/a1/events"),
             ("GET", "/v2/endpoint/alice/a1/logs"), ("GET", "/v2/endpoint/acme"), ("GET", "/v2/endpoint/nobody"),
             ("GET", "/v2/provider/alice")]
    for method, path in calls:
        r = api.http.request(method, path, headers=bob, json={} if method == "PUT" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert "not found" in r.json()["error"] and "a1" not in r.json()["error"]
    assert api.http.post("/v2/endpoint/alice", json=payload("x"), headers=bob).status_code == 404
    # Alice still sees her own endpoints and her organisation's; the admin sees everything.
    assert [e["name"] for e in api.http.get("/v2/endpoint/acme", headers=alice).json()["items"]] == ["o1"]
    assert api.http.get("/v2/endpoint/alice/a1", headers=alice).status_code == 200
    assert api.http.get("/v2/endpoint/bob/b1", headers=alice).status_code == 404
    assert api.http.get("/v2/endpoint/bob/b1", headers=api.admin).status_code == 200
    assert api.http.get("/v2/provider/alice", headers=alice).status_code == 200


SECRET = "s3cr3t-value-that-must-never-leak"
PASSWORD = "registry-password-never-leaks"


def test_secrets_never_leave_the_database(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = payload("sec")
    body["model"]["secrets"] = {"HF_TOKEN": SECRET}
    body["model"]["image"] = {"custom": {"url": "r.example/i:1", "credentials": {"username": "u", "password": PASSWORD}}}
    responses = [api.http.post("/v2/endpoint/admin", json=body, headers=api.admin)]
    assert responses[0].status_code == 201
    responses += [
        api.http.get("/v2/endpoint/admin/sec", headers=api.admin),
        api.http.get("/v2/endpoint/admin", headers=api.admin),
        api.http.put("/v2/endpoint/admin/sec", headers=api.admin, json={"model": {"secrets": {"HF_TOKEN": SECRET,
                                                                                           "B": SECRET}}}),
        api.http.post("/v2/endpoint/admin/sec/pause", headers=api.admin),
        api.http.get("/v2/endpoint/admin/sec/events", headers=api.admin),
        api.http.put("/v2/endpoint/admin/sec", headers=api.admin, json={"model": {"secrets": {"1bad": SECRET}}}),
        api.http.get("/v2/endpoint/admin/sec/logs", headers=api.admin),
        api.http.get("/metrics", headers=api.admin),
    ]
    for r in responses:
        assert SECRET not in r.text and PASSWORD not in r.text, r.request.url
    assert "secrets" not in responses[1].json()["model"]
    with session_factory(api.settings)() as session:
        row = session.scalar(select(Endpoint).where(Endpoint.name == "sec"))
        assert row.secrets == {"HF_TOKEN": SECRET, "B": SECRET}  # stored, for the worker
        assert SECRET not in str(row.spec) and PASSWORD not in str(row.spec)
        events = session.scalars(select(Event).where(Event.endpoint_id == row.id)).all()
        assert events and all(SECRET not in e.message and PASSWORD not in e.message for e in events)
    assert SECRET not in caplog.text and PASSWORD not in caplog.text
