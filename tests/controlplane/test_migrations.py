"""Alembic on both databases: head matches the models, downgrade to base and back, start-up migration switch, and
data migrations that carry rows written in an older shape."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from common.config import Settings
from common.models import Base
from controlplane import migrate
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


OLD_OBSERVED = {
    "replicas": [{"name": "r1-0", "ready": True, "url": "http://127.0.0.1:8101", "revision": 1, "phase": "Running",
                  "restarts": 0},
                 {"name": "r1-1", "ready": False, "url": None, "revision": 1, "phase": "Starting", "restarts": 2}],
    "service_url": None, "revision": 1, "last_ready_revision": 1, "noticed_revision": 1,
    "autoscale_history": [[1000.5, 2], [1010.0, 1]],
    "left_by_an_old_worker": True,
}


def test_0004_gives_old_observed_documents_the_typed_shape(db_url: str, tmp_path: Path) -> None:
    """A database written at 0003 (observed as a free-form document, autoscale samples as pairs) upgrades to rows
    the validated `ObservedStatus` reads, and downgrades back to the pairs."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from common.models import Endpoint
    from common.observed import AutoscaleSample, ObservedReplica

    settings = Settings(data_dir=tmp_path, database_url=db_url)
    migrate.upgrade(settings, revision="0003")
    endpoints = sa.table("endpoints", *(sa.column(c) for c in (
        "namespace", "name", "type", "desired_state", "generation", "spec_revision", "observed_generation", "state",
        "ready_replicas", "target_replicas", "created_at", "updated_at")),
        sa.column("spec", sa.JSON), sa.column("secrets", sa.JSON), sa.column("conditions", sa.JSON),
        sa.column("observed", sa.JSON))
    engine = create_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    common = dict(type="authenticated", desired_state="running", generation=1, spec_revision=1,
                  observed_generation=1, state="running", ready_replicas=1, target_replicas=2, created_at=now,
                  updated_at=now, spec={}, secrets={}, conditions=[])
    try:
        with engine.begin() as conn:
            conn.execute(endpoints.insert(), [dict(common, namespace="alice", name="old", observed=OLD_OBSERVED),
                                              dict(common, namespace="alice", name="fresh", observed={})])
    finally:
        engine.dispose()

    migrate.upgrade(settings)
    engine = create_engine(settings.effective_database_url)
    try:
        with Session(engine) as session:
            rows = dict(session.execute(sa.select(Endpoint.name, Endpoint.observed)).all())
        old = rows["old"]
        assert old.replicas == (ObservedReplica(name="r1-0", ready=True, url="http://127.0.0.1:8101", revision=1,
                                                phase="Running"),
                                ObservedReplica(name="r1-1", ready=False, revision=1, phase="Starting", restarts=2))
        assert (old.revision, old.last_ready_revision, old.noticed_revision, old.service_url) == (1, 1, 1, None)
        assert old.autoscale_history == (AutoscaleSample(at=1000.5, replicas=2), AutoscaleSample(at=1010.0, replicas=1))
        assert old.ready_urls() == ["http://127.0.0.1:8101"]
        assert rows["fresh"].replicas == () and rows["fresh"].last_ready_revision is None
        with engine.connect() as conn:
            raw = conn.execute(sa.select(endpoints.c.observed).where(endpoints.c.name == "old")).scalar_one()
        assert raw["autoscale_history"] == [{"at": 1000.5, "replicas": 2}, {"at": 1010.0, "replicas": 1}]
        assert "left_by_an_old_worker" not in raw
    finally:
        engine.dispose()

    migrate.downgrade(settings, revision="0003")
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.select(endpoints.c.observed).where(endpoints.c.name == "old")).scalar_one()
        assert raw["autoscale_history"] == [[1000.5, 2], [1010.0, 1]] and raw["last_ready_revision"] == 1
    finally:
        engine.dispose()
