"""The observed side of an endpoint as the worker records it, typed: `ObservedStatus`, stored in `endpoints.observed`.

The worker writes it after each reconcile and autoscale pass; the gateway routes from its ready replicas (or the
provider's Service URL). The column holds JSON, but only this shape goes in or comes out: `ObservedJSON` validates
on write and on read, so a field nobody declared cannot creep in, and a row that does not fit fails loudly at the
boundary instead of deep in the reconciler. Migration 0004 brought older rows into this shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, TypeDecorator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObservedReplica(_Frozen):
    """One replica as the provider reported it."""

    name: str
    ready: bool
    url: str | None = None  # where the gateway reaches it directly (a local port, a pod IP)
    revision: int | None = None
    phase: str = "Pending"
    restarts: int = 0


class AutoscaleSample(_Frozen):
    """One autoscale recommendation; scale-down takes the highest of those within the stabilization window."""

    at: float  # Unix time
    replicas: int


class ObservedStatus(_Frozen):
    replicas: tuple[ObservedReplica, ...] = ()
    # A provider-balanced target (a Kubernetes Service), used when no replica has its own URL.
    service_url: str | None = None
    # The spec revision the provider runs now.
    revision: int | None = None
    # The last spec revision verified serving: an endpoint that has served keeps its URL while scaled to zero,
    # paused or updating.
    last_ready_revision: int | None = None
    # The spec revision whose one-time notices (refused env names, provider interpretations) were recorded.
    noticed_revision: int | None = None
    autoscale_history: tuple[AutoscaleSample, ...] = ()

    def ready_urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.ready and r.url]


class ObservedJSON(TypeDecorator):
    """`ObservedStatus` in a JSON column, validated both ways (a plain dict is validated before it is stored)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> dict | None:
        if value is None:
            return None
        status = value if isinstance(value, ObservedStatus) else ObservedStatus.model_validate(value)
        return status.model_dump(mode="json", exclude_defaults=True)

    def process_result_value(self, value: Any, dialect: Any) -> ObservedStatus | None:
        return None if value is None else ObservedStatus.model_validate(value)
