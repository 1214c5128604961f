"""Alembic, driven from code: the API applies pending migrations at start-up, tests go up and down.

The scripts live in the top-level `migrations` package; `controlplane/alembic.ini` serves the `alembic` CLI
(`alembic -c controlplane/alembic.ini upgrade head`), which reads DATABASE_URL like everything else.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

import migrations
from common.config import Settings, get_settings

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(settings: Settings | None = None, *, url: str | None = None) -> Config:
    settings = settings or get_settings()
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # Percent signs in passwords would be taken for interpolation by ConfigParser.
    config.set_main_option("sqlalchemy.url", (url or settings.effective_database_url).replace("%", "%%"))
    config.attributes["settings"] = settings  # data migrations need its secrets key (0003)
    return config


def upgrade(settings: Settings | None = None, *, url: str | None = None, revision: str = "head") -> None:
    settings = settings or get_settings()
    if (url or settings.effective_database_url).startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings, url=url), revision)


def downgrade(settings: Settings | None = None, *, url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings, url=url), revision)


def head_revision() -> str | None:
    return ScriptDirectory(SCRIPT_LOCATION).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
