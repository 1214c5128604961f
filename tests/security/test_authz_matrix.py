"""The API's authorization matrix: every route of the app × {no token, revoked token, other tenant's token, own
token, admin}, with the status each cell must answer. The route list comes from the app's OpenAPI table, so a new
route without an entry here fails `test_every_route_has_a_row`.

alice owns namespace `alice` (an endpoint, tokens); bob is another tenant; every cell gets fresh objects so that a
destructive cell (delete, revoke) cannot change the next one.
"""

from __future__ import annotations

import itertools

import pytest

from tests.controlplane.conftest import Api, payload

PRINCIPALS = ("none", "revoked", "other", "own", "admin")
# An endpoint in a namespace the token cannot see must look exactly like one that does not exist.
HIDDEN = 404

# (method, path template) -> status for each principal, in PRINCIPALS order.
MATRIX: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v2/endpoint/{namespace}"): (401, 401, HIDDEN, 200, 200),
    ("post", "/v2/endpoint/{namespace}"): (401, 401, HIDDEN, 201, 201),
    ("get", "/v2/endpoint/{namespace}/{name}"): (401, 401, HIDDEN, 200, 200),
    ("put", "/v2/endpoint/{namespace}/{name}"): (401, 401, HIDDEN, 200, 200),
    ("delete", "/v2/endpoint/{namespace}/{name}"): (401, 401, HIDDEN, 202, 202),
    ("post", "/v2/endpoint/{namespace}/{name}/pause"): (401, 401, HIDDEN, 200, 200),
    ("post", "/v2/endpoint/{namespace}/{name}/resume"): (401, 401, HIDDEN, 200, 200),
    ("post", "/v2/endpoint/{namespace}/{name}/scale-to-zero"): (401, 401, HIDDEN, 200, 200),
    ("get", "/v2/endpoint/{namespace}/{name}/events"): (401, 401, HIDDEN, 200, 200),
    # The test app has no provider layer: an authorized caller gets the 503 that says so.
    ("get", "/v2/endpoint/{namespace}/{name}/logs"): (401, 401, HIDDEN, 503, 503),
    ("get", "/v2/endpoint/{namespace}/{name}/metrics"): (401, 401, HIDDEN, 200, 200),
    ("get", "/v2/provider/{namespace}"): (401, 401, HIDDEN, 200, 200),
    # The model catalog: any token lists it; a deploy creates an endpoint in the body's namespace (alice's).
    ("get", "/api/v1/catalog/list"): (401, 401, 200, 200, 200),
    ("post", "/api/v1/catalog/model/{repo_id}/deploy"): (401, 401, HIDDEN, 201, 201),
    ("post", "/api/v1/catalog/recipe/{recipe_id}/deploy"): (401, 401, HIDDEN, 201, 201),
    # Any token may ask; the cell names a local directory, which only the local provider reads (the test app has
    # none), so an authenticated caller gets the 400 that says so.
    ("get", "/api/v1/catalog/recommend"): (401, 401, 400, 400, 400),
    ("get", "/api/whoami-v2"): (401, 401, 200, 200, 200),
    ("get", "/api/tokens"): (401, 401, 200, 200, 200),
    # bob may mint tokens for himself only; the body asks for one in alice's namespace.
    ("post", "/api/tokens"): (401, 401, 403, 201, 201),
    ("delete", "/api/tokens/{token_id}"): (401, 401, 404, 200, 200),
    ("get", "/api/namespaces"): (401, 401, 200, 200, 200),
    # Only the admin creates namespaces (each cell asks for a new one).
    ("post", "/api/namespaces"): (401, 401, 403, 403, 201),
    # Sign-in takes the token in its body (the principal's own; none: an empty one); sign-out is idempotent.
    ("post", "/api/session"): (400, 401, 200, 200, 200),
    ("get", "/api/session"): (401, 401, 200, 200, 200),
    ("delete", "/api/session"): (204, 204, 204, 204, 204),
    ("get", "/healthz"): (200, 200, 200, 200, 200),
    ("get", "/readyz"): (200, 200, 200, 200, 200),
    ("get", "/metrics"): (401, 401, 403, 403, 200),
}


def _api_routes(api: Api) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in api.http.app.openapi()["paths"].items() for method in ops}


def test_every_route_has_a_row(api: Api) -> None:
    routes = _api_routes(api)
    assert routes - MATRIX.keys() == set(), "routes without an authorization-matrix entry"
    assert MATRIX.keys() - routes == set(), "matrix entries for routes that no longer exist"


class _World:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.alice = api.mint("alice")
        self.bob = api.mint("bob")
        revoked = api.http.post("/api/tokens", json={"namespace": "alice", "name": "old"}, headers=api.admin).json()
        assert api.http.delete(f"/api/tokens/{revoked['id']}", headers=api.admin).status_code == 200
        self.revoked = {"authorization": f"Bearer {revoked['token']}"}
        self.counter = itertools.count()

    def headers(self, principal: str) -> dict[str, str]:
        return {"none": {}, "revoked": self.revoked, "other": self.bob, "own": self.alice,
                "admin": self.api.admin}[principal]

    def fresh_endpoint(self) -> str:
        name = f"ep{next(self.counter)}"
        r = self.api.http.post("/v2/endpoint/alice", json=payload(name), headers=self.api.admin)
        assert r.status_code == 201, r.text
        return name

    def fresh_token_id(self) -> int:
        r = self.api.http.post("/api/tokens", json={"namespace": "alice", "name": "x"}, headers=self.api.admin)
        return r.json()["id"]


def _request(world: _World, method: str, template: str, principal: str):
    path = template.replace("{namespace}", "alice")
    if "{name}" in path:
        path = path.replace("{name}", world.fresh_endpoint())
    if "{token_id}" in path:
        path = path.replace("{token_id}", str(world.fresh_token_id()))
    path = path.replace("{repo_id}", "Qwen/Qwen2.5-7B-Instruct").replace("{recipe_id}", "qwen2-5-7b-instruct-vllm-l40s")
    if template == "/api/v1/catalog/recommend":
        path += "?repository=/models/smollm2"
    body = None
    if (method, template) == ("post", "/v2/endpoint/{namespace}"):
        body = payload(f"new{next(world.counter)}")
    elif template.startswith("/api/v1/catalog/") and method == "post":
        body = {"namespace": "alice"}  # the name is generated, so every cell creates a new endpoint
    elif method == "put":
        body = {"tags": ["x"]}
    elif (method, template) == ("post", "/api/namespaces"):
        body = {"name": f"ns{next(world.counter)}"}
    elif (method, template) == ("post", "/api/tokens"):
        body = {"namespace": "alice", "name": "minted"}
    elif (method, template) == ("post", "/api/session"):
        header = world.headers(principal).get("authorization", "")
        response = world.api.http.post(path, json={"token": header.removeprefix("Bearer ")})
        world.api.http.cookies.clear()  # the session it opened must not authenticate the next cells
        return response
    return world.api.http.request(method.upper(), path, json=body, headers=world.headers(principal))


def test_authorization_matrix(api: Api) -> None:
    world = _World(api)
    wrong = []
    for (method, template), expected in MATRIX.items():
        for principal, status in zip(PRINCIPALS, expected, strict=True):
            r = _request(world, method, template, principal)
            if r.status_code != status:
                wrong.append(f"{method.upper()} {template} as {principal}: {r.status_code} (want {status}) {r.text[:120]}")
            elif status >= 400:
                assert "error" in r.json(), (method, template, principal, r.text)
    assert not wrong, "\n".join(wrong)


def test_hidden_looks_like_missing(api: Api) -> None:
    """bob asking for alice's existing endpoint gets the very answer he gets for a name that exists nowhere."""
    world = _World(api)
    name = world.fresh_endpoint()
    existing = api.http.get(f"/v2/endpoint/alice/{name}", headers=world.bob)
    missing = api.http.get("/v2/endpoint/alice/no-such-endpoint", headers=world.bob)
    nowhere = api.http.get("/v2/endpoint/nobody-here/no-such-endpoint", headers=world.bob)
    assert existing.status_code == missing.status_code == nowhere.status_code == HIDDEN
    assert existing.json().keys() == missing.json().keys()
    assert name not in existing.text


@pytest.mark.parametrize("cells", [len(MATRIX) * len(PRINCIPALS)])
def test_matrix_size(cells: int) -> None:
    assert cells == 140
