"""`/api/session` and the session cookie, over plain HTTP: what the browser tests rely on, and every bad input the
routes can be sent (a clear 4xx, never a 500, never the token echoed)."""

from __future__ import annotations

import time

import pytest

from controlplane.auth import SESSION_COOKIE, seal_session
from tests.controlplane.conftest import Api, payload


def _raw(headers: dict[str, str]) -> str:
    return headers["authorization"].removeprefix("Bearer ")


def sign_in(api: Api, raw: str) -> dict:
    r = api.http.post("/api/session", json={"token": raw})
    assert r.status_code == 200, r.text
    return r.json()


def test_sign_in_sets_a_sealed_httponly_strict_cookie(api: Api) -> None:
    raw = _raw(api.mint("alice", orgs=["acme"]))
    r = api.http.post("/api/session", json={"token": raw})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "alice" and body["namespaces"] == ["alice", "acme"] and body["csrfToken"]
    assert raw not in r.text
    cookie = r.headers["set-cookie"]
    value = api.http.cookies[SESSION_COOKIE]
    assert raw not in cookie and raw not in value
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert f"max-age={api.settings.session_max_age_seconds}" in lowered
    assert "secure" not in lowered.replace("samesite", "")  # plain http test server; https sets it


def test_cookie_is_secure_when_configured(api: Api) -> None:
    api.settings.session_cookie_secure = True
    try:
        r = api.http.post("/api/session", json={"token": _raw(api.mint("alice"))})
        assert "; secure" in r.headers["set-cookie"].lower()
    finally:
        api.settings.session_cookie_secure = None


def test_cookie_authenticates_reads_and_csrf_guards_writes(api: Api) -> None:
    session = sign_in(api, _raw(api.mint("alice")))
    assert api.http.get("/v2/endpoint/alice").status_code == 200
    who = api.http.get("/api/session").json()
    assert who["name"] == "alice" and who["csrfToken"] == session["csrfToken"]

    without = api.http.post("/v2/endpoint/alice", json=payload("e1"))
    assert without.status_code == 403 and "X-CSRF-Token" in without.json()["error"]
    wrong = api.http.post("/v2/endpoint/alice", json=payload("e1"), headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    right = api.http.post("/v2/endpoint/alice", json=payload("e1"), headers={"X-CSRF-Token": session["csrfToken"]})
    assert right.status_code == 201, right.text
    assert api.http.delete("/v2/endpoint/alice/e1").status_code == 403
    # Another tenant's namespace stays invisible through the cookie too.
    assert api.http.get("/v2/endpoint/bob").status_code == 404


def test_bearer_needs_no_csrf_and_wins_over_the_cookie(api: Api) -> None:
    sign_in(api, _raw(api.mint("alice")))
    bob = api.mint("bob")
    r = api.http.post("/v2/endpoint/bob", json=payload("b1"), headers=bob)
    assert r.status_code == 201
    assert api.http.get("/api/session", headers=bob).json() | {"csrfToken": None} == {
        "name": "bob", "namespaces": ["bob"], "isAdmin": False, "csrfToken": None, "expiresAt": None}


def test_admin_session_lists_every_namespace(api: Api) -> None:
    api.mint("alice", orgs=["acme"])
    body = sign_in(api, api.admin["authorization"].removeprefix("Bearer "))
    assert body["isAdmin"] and {"admin", "alice", "acme"} <= set(body["namespaces"])


def test_revoked_token_ends_the_session(api: Api) -> None:
    r = api.http.post("/api/tokens", json={"namespace": "alice", "name": "browser"}, headers=api.admin)
    sign_in(api, r.json()["token"])
    assert api.http.get("/api/session").status_code == 200
    assert api.http.delete(f"/api/tokens/{r.json()['id']}", headers=api.admin).status_code == 200
    gone = api.http.get("/api/session")
    assert gone.status_code == 401 and "error" in gone.json()


def test_expired_and_tampered_cookies_are_401(api: Api) -> None:
    raw = _raw(api.mint("alice"))
    old = seal_session(api.settings, raw, issued_at=time.time() - api.settings.session_max_age_seconds - 5)
    api.http.cookies.set(SESSION_COOKIE, old)
    assert api.http.get("/api/session").status_code == 401
    fresh = seal_session(api.settings, raw)
    for bad in (fresh[:-4] + "AAAA", "not-a-session", "x" * 5000, fresh.replace("g", "h", 1)):
        api.http.cookies.clear()
        api.http.cookies.set(SESSION_COOKIE, bad)
        r = api.http.get("/v2/endpoint/alice")
        assert r.status_code == 401, bad
    api.http.cookies.clear()
    api.http.cookies.set(SESSION_COOKIE, fresh)
    assert api.http.get("/v2/endpoint/alice").status_code == 200


def test_sign_out_clears_the_cookie_and_needs_csrf_when_signed_in(api: Api) -> None:
    session = sign_in(api, _raw(api.mint("alice")))
    assert api.http.delete("/api/session").status_code == 403
    r = api.http.delete("/api/session", headers={"X-CSRF-Token": session["csrfToken"]})
    assert r.status_code == 204
    assert SESSION_COOKIE not in api.http.cookies
    assert api.http.get("/api/session").status_code == 401
    assert api.http.delete("/api/session").status_code == 204  # idempotent


SECRET_LOOKING = "epc_" + "Z" * 43


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"content": b'{"token": "%s"}' % SECRET_LOOKING.encode(), "headers": {"content-type": "text/plain"}}, 415),
    ({"data": {"token": SECRET_LOOKING}}, 415),  # a form post: the login-CSRF shape
    ({"content": b"token=" + SECRET_LOOKING.encode()}, 415),
    ({"json": {"token": SECRET_LOOKING}}, 401),
    ({"json": {"token": ""}}, 400),
    ({"json": {"token": SECRET_LOOKING, "next": "https://evil"}}, 400),
    ({"json": {"token": 5}}, 400),
    ({"json": {"token": "x" * 300}}, 400),
    ({"json": ["token"]}, 400),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ({"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}}, 400),
    ({"content": b'{"token": "' + b"a" * 5000 + b'"}', "headers": {"content-type": "application/json"}}, 413),
    ({"json": {"token": SECRET_LOOKING}, "headers": {"origin": "https://evil.example"}}, 403),
    ({"json": {"token": SECRET_LOOKING}, "headers": {"origin": "http://testserver.evil.example"}}, 403),
    ({"json": {"token": SECRET_LOOKING}, "headers": {"origin": "null"}}, 403),
    ({"json": {"token": "\r\nSet-Cookie: x=1"}}, 401),
])
def test_sign_in_bad_input(api: Api, kwargs: dict, status: int) -> None:
    r = api.http.post("/api/session", **kwargs)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert SECRET_LOOKING not in r.text and "evil" not in r.text and "Set-Cookie: x" not in r.text
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("origin", ["http://testserver", "https://testserver"])  # https: behind a TLS proxy
def test_sign_in_from_our_own_origin(api: Api, origin: str) -> None:
    r = api.http.post("/api/session", json={"token": _raw(api.mint("alice"))}, headers={"origin": origin})
    assert r.status_code == 200


def test_gateway_accepts_the_cookie_with_csrf_only(api: Api) -> None:
    session = sign_in(api, _raw(api.mint("alice")))
    without = api.http.post("/endpoints/alice/nothing-here/v1/chat/completions", json={})
    assert without.status_code == 403 and "X-CSRF-Token" in without.json()["error"]
    # With the header the caller is authenticated: it is told the endpoint does not exist (not 401).
    r = api.http.post("/endpoints/alice/nothing-here/v1/chat/completions", json={},
                      headers={"X-CSRF-Token": session["csrfToken"]})
    assert r.status_code == 404
    api.http.cookies.clear()
    api.http.cookies.set(SESSION_COOKIE, "garbage")
    assert api.http.get("/endpoints/alice/nothing-here/health").status_code == 401


def test_session_cookie_is_not_forwarded_to_replicas() -> None:
    from controlplane.auth import without_session_cookie

    header = f"a=1; {SESSION_COOKIE}=sealed; b=2".encode()
    assert without_session_cookie(header) == b"a=1; b=2"
    assert without_session_cookie(f"{SESSION_COOKIE}=sealed".encode()) == b""


@pytest.mark.parametrize("cookie", [b"endpointctl_session=\xff\xfe", b"endpointctl_session=" + b"A" * 10_000,
                                    b"endpointctl_session=\"quoted\"", b"endpointctl_session=;endpointctl_session=x",
                                    b"endpointctl_session=fernet:abc", b"endpointctl_session=%00"])
def test_hostile_cookies_are_401_never_500(api: Api, cookie: bytes) -> None:
    for method, path in (("GET", "/api/session"), ("POST", "/v2/endpoint/alice"), ("DELETE", "/api/session"),
                         ("GET", "/endpoints/alice/e1/health"), ("POST", "/endpoints/alice/e1/generate")):
        r = api.http.request(method, path, headers={"cookie": cookie}, json={})
        assert r.status_code in (204, 401), (method, path, r.status_code, r.text)
        assert "A" * 100 not in r.text
