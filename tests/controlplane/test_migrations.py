"""Alembic on both databases: head matches the models, downgrade to base and back, start-up migration switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from controlplane import migrate
from common.config import Settings
from common.models import Base
from tests.controlplane.conftest import ROOT, start_live_server, stop_live_server
from tests.fixtures.services import RedisServer

TABLES = {"namespaces", "memberships", "api_tokens", "endpoints", "events"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_downgrade_base_round_trip(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db_url)
    url = settings.effective_database_url
    migrate.upgrade(settings)
    assert TABLES <= _tables(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            # The migrations create exactly what the models declare.
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], diff
    finally:
        engine.dispose()
    migrate.downgrade(settings)
    assert _tables(url) <= {"alembic_version"}
    migrate.upgrade(settings)
    assert TABLES <= _tables(url)


def test_alembic_cli_uses_the_shipped_config(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "ENDPOINTCTL_DATA_DIR": str(tmp_path)}
    alembic = Path(sys.executable).with_name("alembic")
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        subprocess.run([str(alembic), "-c", "controlplane/alembic.ini", *args], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=120)
    assert TABLES <= _tables(Settings(data_dir=tmp_path, database_url=db_url).effective_database_url)


def test_start_up_migration_can_be_switched_off(db_url: str, tmp_path: Path, redis_server: RedisServer) -> None:
    server = start_live_server(database_url=db_url, data_dir=tmp_path / "a", redis_url=redis_server.url,
                               extra_env={"ENDPOINTCTL_MIGRATE_ON_START": "false"}, wait_ready=False)
    try:
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 503 and "migrations" in r.json()["error"]
        # Requests against an unmigrated database are a clear 503, not a 500.
        r = httpx.get(f"{server.url}/v2/endpoint/admin", headers=server.headers())
        assert r.status_code == 503 and r.json()["error"]
    finally:
        stop_live_server(server)
    subprocess.run([sys.executable, "-m", "controlplane", "migrate"], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "DATABASE_URL": db_url, "ENDPOINTCTL_DATA_DIR": str(tmp_path / "a")},
                   capture_output=True)
    server = start_live_server(database_url=db_url, data_dir=tmp_path / "a", redis_url=redis_server.url,
                               args=("--no-migrate",))
    try:
        assert httpx.get(f"{server.url}/readyz").json()["status"] == "ok"
    finally:
        stop_live_server(server)
