"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for one host.

Kombu hands every transport option to `create_engine`, so options meant for the channel (polling interval) break
it; this subclass strips them, polls every 0.1 s instead of 1 s (each reconcile hop would otherwise add up to a
second to a scale-from-zero wake), and gives SQLite a busy timeout and WAL so the API and the worker can share it.
Registered as the `esqla` transport alias: broker URL `esqla+sqlite:///<data_dir>/broker.db`.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SQLAChannel
from kombu.transport.sqlalchemy import Transport as SQLATransport
from sqlalchemy import create_engine, event

CHANNEL_ONLY_OPTIONS = ("polling_interval", "visibility_timeout")


class Channel(SQLAChannel):
    def _engine_from_config(self):
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items()
                   if k in ("pool_size", "max_overflow", "pool_recycle", "echo")}
        engine = create_engine(conninfo.hostname, connect_args={"timeout": 30, "check_same_thread": False}, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine


class Transport(SQLATransport):
    Channel = Channel
    polling_interval = 0.1


TRANSPORT_ALIASES.setdefault("esqla", "common.embedded_broker:Transport")
