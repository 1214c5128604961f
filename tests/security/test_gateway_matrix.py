"""The gateway's authorization matrix on one real stack (`endpointctl up`'s processes, tiny-model replicas): every
route a replica serves × every kind of endpoint × {no token, revoked token, other tenant's token, own token, admin}
→ the expected status of each cell.

The gateway has no route table of its own: it serves whatever the replica serves. The routes come from the bundled
runtime's OpenAPI spec, read through the gateway, so a route added to the runtime without a row in `ROUTES` fails
here. Endpoint kinds: public, authenticated, private (called from outside and from inside its network), paused,
scaled to zero (which only callers who may use it can wake), and one that does not exist.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body

pytestmark = [pytest.mark.slow]

GENERATE = {"inputs": "hi", "parameters": {"max_new_tokens": 2}}
# (method, replica path) -> (request body, the replica's own answer to an allowed caller)
ROUTES: dict[tuple[str, str], tuple[dict | None, int]] = {
    ("GET", "/"): (None, 200),
    ("POST", "/"): (GENERATE, 200),
    ("GET", "/ping"): (None, 200),
    ("GET", "/health"): (None, 200),
    ("GET", "/info"): (None, 200),
    ("GET", "/metrics"): (None, 200),
    ("POST", "/tokenize"): ({"inputs": "hi"}, 200),
    ("POST", "/detokenize"): ({"tokens": [1, 2]}, 200),
    ("POST", "/generate"): (GENERATE, 200),
    ("POST", "/generate_stream"): (GENERATE, 200),
    ("GET", "/v1/models"): (None, 200),
    ("POST", "/v1/completions"): ({"model": "tgi", "prompt": "hi", "max_tokens": 2}, 200),
    ("POST", "/v1/chat/completions"): ({"model": "tgi", "max_tokens": 2,
                                        "messages": [{"role": "user", "content": "hi"}]}, 200),
    ("POST", "/v1/embeddings"): ({"model": "tgi", "input": "hi"}, 404),  # a generation model: the replica says no
}
CALLERS = ("none", "revoked", "other", "own", "admin")
INSIDE, OUTSIDE = "127.0.0.2", "127.0.0.1"  # the stack's private network is 127.0.0.2/32 only
NO_WAIT = {"x-scale-up-timeout": "0"}


def expected(endpoint: str, caller: str, source: str) -> int | None:
    """The gateway's refusal for this cell, or None where the request reaches the replica (which answers `ok`):
    the rule in controlplane/gateway/proxy.py's docstring."""
    if endpoint == "pub":
        return None  # public: everyone, whatever token they send
    if caller in ("none", "revoked"):
        return 401  # existing or not: an anonymous caller learns nothing
    if caller == "other" or endpoint == "ghost":
        return 404  # one answer for "does not exist" and "not yours"
    if endpoint == "priv" and source == OUTSIDE:
        return 403
    if endpoint == "paused":
        return 503
    return None


def _mint(api: Api, namespace: str) -> dict:
    r = api.http.post("/api/tokens", json={"namespace": namespace, "name": f"{namespace}-matrix"})
    assert r.status_code == 201, r.text
    return r.json()


def test_gateway_authorization_matrix(make_stack, tiny_model_dir):
    stack = make_stack(ENDPOINTCTL_PRIVATE_NETWORKS=f"{INSIDE}/32")
    api = Api(stack.url)
    assert api.http.post("/api/namespaces", json={"name": "alice", "kind": "user"}).status_code == 201
    for name, kind in (("pub", "public"), ("authn", "authenticated"), ("priv", "private"),
                       ("paused", "authenticated"), ("sleepy", "authenticated")):
        r = api.http.post("/v2/endpoint/alice", json=create_body(name, str(tiny_model_dir), type=kind))
        assert r.status_code == 201, r.text
    assert api.http.post("/v2/endpoint/alice/paused/pause").status_code == 200
    assert api.http.post("/v2/endpoint/alice/sleepy/scale-to-zero").status_code == 200
    for name in ("pub", "authn", "priv"):
        api.wait_state(name, "running", timeout=240, ns="alice")
    api.wait_state("paused", "paused", timeout=120, ns="alice")
    api.wait_state("sleepy", "scaledToZero", timeout=120, ns="alice")

    revoked = _mint(api, "alice")
    assert api.http.delete(f"/api/tokens/{revoked['id']}").status_code == 200
    tokens = {"none": None, "revoked": revoked["token"], "other": _mint(api, "bob")["token"],
              "own": _mint(api, "alice")["token"], "admin": ADMIN_TOKEN}
    clients = {source: httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=120)
               for source in (INSIDE, OUTSIDE)}

    def call(endpoint: str, caller: str, route: tuple[str, str], source: str = OUTSIDE,
             hold: dict[str, str] = NO_WAIT) -> httpx.Response:
        method, path = route
        headers = dict(hold)
        if tokens[caller]:
            headers["authorization"] = f"Bearer {tokens[caller]}"
        return clients[source].request(method, f"{stack.url}/endpoints/alice/{endpoint}{path}", headers=headers,
                                       json=ROUTES.get(route, (None, 0))[0])

    try:
        # The routes a replica serves, as the replica itself lists them (through the gateway).
        spec = call("pub", "none", ("GET", "/openapi.json")).json()
        served = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
        assert served == set(ROUTES), f"routes without a row in ROUTES: {served - set(ROUTES)}, " \
                                      f"rows for routes the runtime no longer serves: {set(ROUTES) - served}"

        cells: list[tuple] = []
        wrong: list[tuple] = []

        def check(endpoint: str, caller: str, route: tuple[str, str], source: str, refusal: int | None,
                  send: Callable[[], httpx.Response]) -> None:
            """`refusal`: the gateway's status for this cell, None where the replica answers (its own `ok`)."""
            r = send()
            cells.append((endpoint, caller, route, source))
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
            by_gateway = isinstance(body, dict) and body.get("error_type") == "gateway"
            want = ROUTES[route][1] if refusal is None else refusal
            if r.status_code != want or by_gateway != (refusal is not None):
                wrong.append((endpoint, caller, route, source, want, r.status_code, r.text[:200]))

        for endpoint, source in (("pub", OUTSIDE), ("authn", OUTSIDE), ("priv", OUTSIDE), ("priv", INSIDE),
                                 ("paused", OUTSIDE), ("ghost", OUTSIDE)):
            for caller in CALLERS:
                for route in ROUTES:
                    check(endpoint, caller, route, source, expected(endpoint, caller, source),
                          lambda: call(endpoint, caller, route, source))

        # Scaled to zero: callers who may not use it cannot wake it (nor learn it exists)...
        for caller in ("none", "revoked", "other"):
            for route in ROUTES:
                check("sleepy", caller, route, OUTSIDE, expected("sleepy", caller, OUTSIDE),
                      lambda: call("sleepy", caller, route))
        endpoint = api.get("sleepy", ns="alice")
        assert endpoint["status"]["state"] == "scaledToZero", endpoint["status"]
        # ...its owner's request wakes it and is held until a replica answers; then everyone allowed is served.
        check("sleepy", "own", ("GET", "/health"), OUTSIDE, None,
              lambda: call("sleepy", "own", ("GET", "/health"), hold={"x-scale-up-timeout": "240"}))
        for caller in ("own", "admin"):
            for route in ROUTES:
                check("sleepy", caller, route, OUTSIDE, None, lambda: call("sleepy", caller, route))
    finally:
        for client in clients.values():
            client.close()

    print(f"\ngateway matrix: {len(cells)} cells over {len(ROUTES)} routes, {len(wrong)} wrong", file=sys.stderr)
    assert not wrong, "\n".join(map(repr, wrong))
    assert len(cells) >= 6 * len(CALLERS) * len(ROUTES)
