"""Dashboard tests: the control-plane fixtures (SQLite and PostgreSQL, the admin's headers, `mint`) for the plain
HTTP tests; the browser tests bring their own stack (tests/fixtures/browser.py)."""

from tests.controlplane.conftest import api, db_url, settings  # noqa: F401  (fixtures)
