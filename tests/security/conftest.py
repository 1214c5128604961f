"""Fixtures of the security suite: hostile tenants against real processes (the embedded stack, the API, the
runtime). Each test module owns one room: the API's validation, the gateway, the local provider, the runtime."""

# The API's fixtures (TestClient on SQLite and PostgreSQL, live servers) and the embedded stack's, shared here.
from tests.controlplane.conftest import api, db_url, live_server, settings  # noqa: E402,F401
from tests.e2e.conftest import make_stack  # noqa: E402,F401
