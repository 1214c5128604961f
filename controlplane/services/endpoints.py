"""Endpoint use cases: authorize, validate, store desired state, record an event, then enqueue a reconcile.

The API never touches status (the worker owns it) except `state="pending"` at create. Every write that changes
the desired state or the spec bumps `generation`; a change to what the replicas run also bumps `spec_revision`,
which the worker rolls out. Deleted-but-not-yet-removed rows (desired_state="deleted") are invisible to reads and
block re-creating the name until the worker has removed them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from common.catalog import Catalog
from common.errors import AlreadyRunning, Conflict, Forbidden, InvalidSpec, NotFound
from common.models import DesiredState, Endpoint, EndpointState, EventType, record_event, utcnow
from common.observed import ObservedStatus
from controlplane.auth import Principal
from controlplane.schemas import EndpointCreate, EndpointUpdate
from controlplane.services.enqueue import Enqueue
from controlplane.services.namespaces import NamespaceService
from controlplane.services.quota import Quota, check_quota
from controlplane.services.validation import (MAX_NAME, NAME_RE, SpecLimits, check_namespace, runtime_view,
                                              validate_create)


# Reads skip the write-only columns and the worker's scratch space; an update loads them when it touches them.
_READ_OPTIONS = (defer(Endpoint.secrets), defer(Endpoint.image_credentials), defer(Endpoint.observed))


@dataclass
class EndpointService:
    session: Session
    principal: Principal
    catalog: Catalog
    enqueue: Enqueue
    limits: SpecLimits = SpecLimits()
    quota: Quota = Quota()

    # --- reads -------------------------------------------------------------------------------------------
    def authorize(self, namespace: str) -> str:
        check_namespace(namespace)
        if not self.principal.can_access(namespace):
            # The same answer as for a namespace nobody has: a token learns nothing about what it cannot see.
            raise NotFound(f"namespace {namespace!r} not found "
                           f"(this token can access: {', '.join(self.principal.namespaces)})")
        return namespace

    def list(self, namespace: str, *, limit: int | None = None, offset: int = 0) -> Sequence[Endpoint]:
        self.authorize(namespace)
        query = (select(Endpoint).where(Endpoint.namespace == namespace,
                                        Endpoint.desired_state != DesiredState.DELETED.value)
                 .options(*_READ_OPTIONS).order_by(Endpoint.name).offset(offset))
        if limit is not None:
            query = query.limit(limit)
        return self.session.scalars(query).all()

    def get(self, namespace: str, name: str, *, for_update: bool = False) -> Endpoint:
        """A visible endpoint; `for_update` locks the row (PostgreSQL) so concurrent writes apply one by one."""
        self.authorize(namespace)
        if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
            raise NotFound(f"endpoint {namespace}/{name[:64]} not found (not a valid endpoint name)")
        query = select(Endpoint).options(*_READ_OPTIONS).where(Endpoint.namespace == namespace, Endpoint.name == name)
        if for_update:
            query = query.with_for_update()
        row = self.session.scalar(query)
        if row is None or row.desired_state == DesiredState.DELETED.value:
            raise NotFound(f"endpoint {namespace}/{name} not found")
        return row

    # --- writes ------------------------------------------------------------------------------------------
    def create(self, namespace: str, body: EndpointCreate) -> Endpoint:
        self.authorize(namespace)
        if self.principal.is_admin:
            # Everyone else can only name namespaces that exist; the admin could create one by a typo.
            NamespaceService(self.session, self.principal).require(namespace)
        valid = validate_create(body, self.catalog, self.limits)
        self._raise_if_taken(namespace, valid.name)
        check_quota(self.session, self.catalog, self.quota, namespace=namespace, spec=valid.spec)
        now = utcnow()
        row = Endpoint(namespace=namespace, name=valid.name, type=valid.type, spec=valid.spec, secrets=valid.secrets,
                       image_credentials=valid.image_credentials, desired_state=DesiredState.RUNNING.value,
                       generation=1, spec_revision=1, observed_generation=0, state=EndpointState.PENDING.value,
                       ready_replicas=0, target_replicas=0, conditions=[], observed=ObservedStatus(), created_at=now,
                       updated_at=now, created_by=self.principal.name, updated_by=self.principal.name)
        try:
            self.session.add(row)
            self.session.flush()
            record_event(self.session, row, type=EventType.NORMAL, reason="Created",
                         message=f"created by {self.principal.name}: {valid.spec['model']['repository']} on "
                                 f"{valid.catalog_id}")
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            self._raise_if_taken(namespace, valid.name)
            raise Conflict(f"endpoint {namespace}/{valid.name} already exists") from None
        self.enqueue(row.id)
        return row

    def update(self, namespace: str, name: str, body: EndpointUpdate) -> Endpoint:
        row = self.get(namespace, name, for_update=True)
        update = body.model_dump(exclude_unset=True)
        merged = _merge(self._current_wire(row), update)
        sent_compute = update.get("compute") or {}
        if ("instanceType" in sent_compute or "instanceSize" in sent_compute) and "accelerator" not in sent_compute:
            # A new instance implies its accelerator; do not make the caller repeat it.
            provider, compute = merged.get("provider") or {}, merged["compute"]
            inst = self.catalog.lookup(str(provider.get("vendor")), str(provider.get("region")),
                                       str(compute.get("instanceType")), str(compute.get("instanceSize")))
            if inst is not None:
                compute["accelerator"] = inst.accelerator
        old_creds = row.image_credentials
        try:
            parsed = EndpointCreate.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise InvalidSpec(f"{loc}: {first['msg']}", param=loc) from None
        valid = validate_create(parsed, self.catalog, self.limits)
        if valid.spec["compute"] != row.spec.get("compute") or valid.spec["provider"] != row.spec.get("provider"):
            check_quota(self.session, self.catalog, self.quota, namespace=namespace, spec=valid.spec,
                        replacing=row.id)
        credentials = valid.image_credentials
        if credentials and credentials.get("password") is None and old_creds \
                and old_creds.get("username") == credentials["username"]:
            # Responses never carry the password; an echoed image keeps the stored one.
            credentials = {**credentials, "password": old_creds.get("password")}
        old_runtime = runtime_view(row.spec, row.secrets or {}, old_creds)
        new_runtime = runtime_view(valid.spec, valid.secrets, credentials)
        if valid.spec == row.spec and valid.type == row.type and valid.secrets == (row.secrets or {}) \
                and credentials == old_creds:
            return row
        changed = sorted(k for k in ("compute", "model", "provider", "route", "tags", "cacheHttpResponses",
                                     "healthRoute") if valid.spec.get(k) != row.spec.get(k))
        if valid.secrets != (row.secrets or {}):
            changed.append("secrets")
        if valid.type != row.type:
            changed.append("type")
        row.spec = valid.spec
        row.type = valid.type
        row.secrets = valid.secrets
        row.image_credentials = credentials
        self._bump(row, revision=new_runtime != old_runtime)
        record_event(self.session, row, type=EventType.NORMAL, reason="Updated",
                     message=f"updated by {self.principal.name}: {', '.join(changed)} (generation {row.generation}, "
                             f"revision {row.spec_revision})")
        self.session.commit()
        self.enqueue(row.id)
        return row

    def pause(self, namespace: str, name: str) -> Endpoint:
        row = self.get(namespace, name, for_update=True)
        return self._set_desired(row, DesiredState.PAUSED, reason="PauseRequested")

    def scale_to_zero(self, namespace: str, name: str) -> Endpoint:
        row = self.get(namespace, name, for_update=True)
        if row.desired_state == DesiredState.PAUSED.value:
            raise InvalidSpec(f"endpoint {namespace}/{name} is paused; resume it instead of scaling it to zero")
        return self._set_desired(row, DesiredState.SCALED_TO_ZERO, reason="ScaleToZeroRequested")

    def resume(self, namespace: str, name: str) -> Endpoint:
        row = self.get(namespace, name, for_update=True)
        if row.desired_state == DesiredState.RUNNING.value and row.state == EndpointState.RUNNING.value:
            raise AlreadyRunning(f"endpoint {namespace}/{name} is already running")
        row.desired_replicas = None
        return self._set_desired(row, DesiredState.RUNNING, reason="ResumeRequested")

    def delete(self, namespace: str, name: str) -> Endpoint:
        row = self.get(namespace, name, for_update=True)
        return self._set_desired(row, DesiredState.DELETED, reason="DeletionRequested")

    # --- helpers -----------------------------------------------------------------------------------------
    def _set_desired(self, row: Endpoint, desired: DesiredState, *, reason: str) -> Endpoint:
        row.desired_state = desired.value
        self._bump(row)
        record_event(self.session, row, type=EventType.NORMAL, reason=reason,
                     message=f"{desired.value} requested by {self.principal.name} (generation {row.generation})")
        self.session.commit()
        self.enqueue(row.id)
        return row

    def _bump(self, row: Endpoint, *, revision: bool = False) -> None:
        """Increment in SQL, not in Python: two concurrent writes must yield two generations, or the worker could
        mark the second one observed after reconciling only the first."""
        row.generation = Endpoint.generation + 1
        if revision:
            row.spec_revision = Endpoint.spec_revision + 1
        row.updated_at = utcnow()
        row.updated_by = self.principal.name
        self.session.flush()  # the counters are expired by the UPDATE and reload with their new values

    def _raise_if_taken(self, namespace: str, name: str) -> None:
        existing = self.session.scalar(select(Endpoint).where(Endpoint.namespace == namespace,
                                                              Endpoint.name == name))
        if existing is None:
            return
        if existing.desired_state == DesiredState.DELETED.value:
            raise Conflict(f"endpoint {namespace}/{name} is being deleted; retry once the deletion has completed")
        raise Conflict(f"endpoint {namespace}/{name} already exists")

    @staticmethod
    def _current_wire(row: Endpoint) -> dict[str, Any]:
        """The row as a create request (secrets and credentials included) so an update can be merged into it."""
        spec = copy.deepcopy(row.spec)
        model = spec["model"]
        model["secrets"] = dict(row.secrets or {})
        (variant, image), = model["image"].items()
        if row.image_credentials and variant == "custom":
            image["credentials"] = dict(row.image_credentials)
        return {"name": row.name, "type": row.type, "compute": spec["compute"], "model": model,
                "provider": spec["provider"], "route": spec.get("route"), "tags": spec.get("tags"),
                "cacheHttpResponses": spec.get("cacheHttpResponses"), "privateService": spec.get("privateService")}


# Keys whose value is replaced as a whole by an update rather than merged key by key.
_REPLACED = {("model", "image"), ("model", "env"), ("model", "secrets"), ("compute", "scaling", "measure"),
             ("tags",), ("model", "command"), ("model", "args")}


def _merge(current: dict[str, Any], update: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    out = dict(current)
    for key, value in update.items():
        here = (*path, key)
        if isinstance(value, dict) and here not in _REPLACED and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, here)
        elif value is None and not path and key in ("compute", "model", "provider"):
            continue  # an explicit null for a required section means "leave it"
        else:
            out[key] = value
    return out
