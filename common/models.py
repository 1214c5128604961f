"""Database tables of the control plane (SQLAlchemy 2 typed mappings), shared by the API, the worker and the gateway.

Ownership of columns is strict, because the API and the worker write the same rows concurrently:
- the API writes the *desired* side (spec, secrets, type, desired_state, generation, spec_revision);
- the worker writes the *observed* side (state, message, url, replica counts, conditions, observed,
  observed_generation) and `desired_replicas` (the autoscaler's choice);
- the gateway writes `last_activity_at`.
The API sets `state="pending"` once, at create; after that status belongs to the worker.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.crypto import EncryptedJSON
from common.observed import ObservedJSON, ObservedStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values and hands them back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class NamespaceKind(str, enum.Enum):
    USER = "user"
    ORG = "org"


class EndpointType(str, enum.Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    PRIVATE = "private"


class DesiredState(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SCALED_TO_ZERO = "scaledToZero"
    DELETED = "deleted"


class EndpointState(str, enum.Enum):
    """The eight `status.state` values huggingface_hub understands; only the worker moves between them."""

    PENDING = "pending"
    INITIALIZING = "initializing"
    UPDATING = "updating"
    UPDATE_FAILED = "updateFailed"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    SCALED_TO_ZERO = "scaledToZero"


class EventType(str, enum.Enum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Namespace(Base):
    """A user or an organisation; endpoints live in namespaces, tokens belong to user namespaces."""

    __tablename__ = "namespaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8), default=NamespaceKind.USER.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    """A user belongs to an organisation: its tokens may read and write the organisation's endpoints."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "org_id", name="uq_memberships_user_org"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, the plain value is shown once when minted."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    namespace: Mapped[Namespace] = relationship(lazy="joined")


class Endpoint(Base):
    """One inference endpoint: desired spec from the API, observed status from the worker."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_endpoints_namespace_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16), default=EndpointType.AUTHENTICATED.value)
    # Wire-shaped desired spec without secrets: {"compute", "model", "provider", "route", "tags",
    # "cacheHttpResponses", "healthRoute", "privateService"}; registry credentials keep only the username.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Write-only: model.secrets (env name -> value). Never serialized into a response, an event or a log line.
    # Encrypted at rest (common/crypto.py), like the credentials below.
    secrets: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict)
    # Write-only: custom image registry credentials {"username", "password"}.
    image_credentials: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON, default=None)

    desired_state: Mapped[str] = mapped_column(String(16), default=DesiredState.RUNNING.value, index=True)
    desired_replicas: Mapped[int | None] = mapped_column(Integer, default=None)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    spec_revision: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)

    state: Mapped[str] = mapped_column(String(16), default=EndpointState.PENDING.value)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    url: Mapped[str | None] = mapped_column(Text, default=None)
    ready_replicas: Mapped[int] = mapped_column(Integer, default=0)
    target_replicas: Mapped[int] = mapped_column(Integer, default=0)
    conditions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # What the worker last saw of the replicas (common/observed.py): validated whenever it is read or written.
    observed: Mapped[ObservedStatus] = mapped_column(ObservedJSON, default=ObservedStatus)

    last_activity_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_by: Mapped[str | None] = mapped_column(String(64), default=None)

    @property
    def provider_key(self) -> str:
        """Stable DNS-safe identifier for provider objects; the id keeps a re-created name from adopting old ones."""
        return f"ep-{self.id}-{self.name}"

    @property
    def min_replicas(self) -> int:
        return int(self.spec["compute"]["scaling"].get("minReplica", 1))

    @property
    def max_replicas(self) -> int:
        return int(self.spec["compute"]["scaling"].get("maxReplica", 1))


class Event(Base):
    """Human-readable history of an endpoint (Kubernetes-style); survives the endpoint's deletion."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_endpoint_id_id", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("endpoints.id", ondelete="SET NULL"), default=None)
    namespace: Mapped[str] = mapped_column(String(64))
    endpoint_name: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(8), default=EventType.NORMAL.value)
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClusterCapacity(Base):
    """Accelerators per instance type as the worker last observed them on the cluster (Kubernetes provider only).

    The API never talks to the cluster; the worker's `refresh_capacity` task writes these rows and the hardware
    catalog reads them for each instance's `status` and `quota`."""

    __tablename__ = "cluster_capacity"

    instance_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    allocatable: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[int] = mapped_column(Integer, default=0)
    max_allocatable_per_node: Mapped[int] = mapped_column(Integer, default=0)
    max_free_per_node: Mapped[int] = mapped_column(Integer, default=0)
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)


class EndpointMetricSample(Base):
    """One point of an endpoint's recent load, written by the worker's `sample_metrics` beat task and read by the
    dashboard's charts (`GET /v2/endpoint/{ns}/{name}/metrics`). Rates and percentiles are of the interval since the
    previous sample; `counters` keeps each replica's cumulative counters so the next pass can take the difference,
    whichever worker runs it. Rows older than `metrics_retention` are pruned on every pass."""

    __tablename__ = "endpoint_metric_samples"
    __table_args__ = (Index("ix_endpoint_metric_samples_endpoint_id_at", "endpoint_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_replicas: Mapped[int] = mapped_column(Integer, default=0)
    target_replicas: Mapped[int] = mapped_column(Integer, default=0)
    requests_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    output_tokens_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    ttft_p50: Mapped[float | None] = mapped_column(Float, default=None)
    ttft_p95: Mapped[float | None] = mapped_column(Float, default=None)
    latency_p50: Mapped[float | None] = mapped_column(Float, default=None)
    latency_p95: Mapped[float | None] = mapped_column(Float, default=None)
    pending_requests: Mapped[float | None] = mapped_column(Float, default=None)
    counters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def record_event(session: Any, endpoint: Endpoint, *, type: str | EventType, reason: str, message: str) -> Event:
    """Append an event for `endpoint` to the session (the caller commits). Messages must never carry secrets."""
    event = Event(endpoint_id=endpoint.id, namespace=endpoint.namespace, endpoint_name=endpoint.name,
                  type=EventType(type).value, reason=reason, message=message)
    session.add(event)
    return event
