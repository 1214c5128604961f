"""One Settings object for every process of the control plane (API, gateway, worker, beat).

The API and the worker must agree on the database, the broker and the data directory, so they read the same
environment variables; names follow the ecosystem (DATABASE_URL, REDIS_URL) and ours carry ENDPOINTCTL_.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "endpointctl"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENDPOINTCTL_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Ecosystem names, read without our prefix.
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "ENDPOINTCTL_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ENDPOINTCTL_REDIS_URL"))

    # Bootstrap admin: its token owns the admin namespace.
    admin_token: str | None = None
    admin_namespace: str = "admin"

    # Public base URL of this control plane (the gateway builds endpoint URLs from it); empty = from the request.
    public_url: str | None = None
    # Hardware catalog override (a YAML file in the shipped format).
    hardware_catalog: Path | None = None
    # Provider the worker drives: "local" (processes on this machine) or "kubernetes".
    provider: str = "local"
    # Apply pending Alembic migrations when the API starts.
    migrate_on_start: bool = True

    # Gateway: how long a request to a scaled-to-zero endpoint is held by default (seconds).
    scale_up_timeout: float = 120.0
    # Networks whose clients may call `private` endpoints (the host itself; add the cluster's pod CIDR in k8s).
    private_networks: str = "127.0.0.0/8,::1/128"

    # Worker periodic tasks (seconds).
    resync_interval: float = 30.0
    idle_check_interval: float = 15.0
    autoscale_interval: float = 10.0
    # Autoscaler: scale down only to the highest recommendation seen within this window (seconds), so it won't flap.
    scale_down_window: float = 120.0

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common "postgresql://" / "postgres://" spellings and use psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix):]
            return url
        return f"sqlite:///{self.data_dir / 'endpointctl.db'}"

    @property
    def broker_url(self) -> str:
        """Redis in production; kombu's SQLAlchemy transport on SQLite when no broker server is configured."""
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{self.data_dir / 'broker.db'}"


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
