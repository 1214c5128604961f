"""The shared PostgreSQL and Redis fixtures behave as documented (everybody's tests rely on them)."""

from __future__ import annotations

import os

import psycopg
import redis

from tests.fixtures.services import PostgresServer, RedisServer


def test_postgres_database_is_fresh_and_isolated(postgres_server: PostgresServer, postgres_database: str) -> None:
    assert postgres_database.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/t_")
    other = postgres_server.create_database()
    try:
        dsn = postgres_database.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
            assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        with psycopg.connect(other.replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()[0] == 0
    finally:
        postgres_server.drop_database(other)
    if os.geteuid() == 0:
        assert postgres_server.root.stat().st_uid != 0  # the cluster belongs to an unprivileged user


def test_redis_restart_keeps_the_port_and_drops_the_data(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server)
    client.set("k", "v")
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port and redis.Redis.from_url(redis_server.url).get("k") is None
    client.set("k2", "v")  # the old client reconnects by itself
    redis_server.flush()
    assert client.dbsize() == 0
    client.close()
