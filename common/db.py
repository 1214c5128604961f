"""Engines and sessions for the control-plane database, shared by the API, the gateway and the worker.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys on every connection, so the API's thread
pool, the worker and the gateway can share one file; PostgreSQL is used as is through psycopg 3. The SQLite file
holds tenants' (encrypted) secrets and token hashes, so it is made 0600 before SQLite opens it, whatever the umask;
SQLite gives its -wal, -shm and -journal files the database file's mode.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings, get_settings
from common.crypto import bind_keyring, keyring_for

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI objects are untyped
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def _private_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
        for path in (database, f"{database}-wal", f"{database}-shm", f"{database}-journal"):
            if os.path.exists(path) and os.stat(path).st_mode & 0o077:
                os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & 0o700)
    except OSError:
        return  # a directory that does not exist yet or is not ours: SQLite's own error says it better


def _json_loads(text: str | bytes) -> Any:
    """orjson where it can (listing 1,000 endpoints decodes 3,000 JSON columns); the stdlib for what only it reads
    (NaN/Infinity written by a json.dumps elsewhere)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(settings: Settings | None = None, *, url: str | None = None) -> Engine:
    """A new engine for the configured database (callers that want sharing use `get_engine`)."""
    settings = settings or get_settings()
    url = url or settings.effective_database_url
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        # pysqlite begins a transaction only before the first write, so writers queue on the busy timeout
        # instead of failing with "database is locked" on a read-to-write upgrade.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=20, max_overflow=20, json_deserializer=_json_loads)
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, json_deserializer=_json_loads)
    bind_keyring(engine.dialect, keyring_for(settings))
    return engine


def get_engine(settings: Settings | None = None) -> Engine:
    """One engine per database URL per process."""
    settings = settings or get_settings()
    url = settings.effective_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(settings, url=url)
        return engine


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    """Sessions bound to the shared engine; objects stay readable after commit (we serialize after writing)."""
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection (tests drop their databases afterwards)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
