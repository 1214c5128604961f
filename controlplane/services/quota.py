"""Per-namespace quota: how many endpoints, and how many accelerators they may hold at their maxReplica.

Counted at maxReplica, not at the replicas running now, because the autoscaler and a wake from zero may raise a
deployment to its maximum without asking the API again: admitting the spec is admitting its ceiling. Paused and
scaled-to-zero endpoints count too; they come back without a new check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.catalog import Catalog
from common.errors import QuotaExceeded
from common.models import DesiredState, Endpoint


@dataclass(frozen=True)
class Quota:
    max_endpoints: int = 200
    max_accelerators: int = 256

    @classmethod
    def from_settings(cls, settings: Any) -> Quota:
        return cls(max_endpoints=settings.max_endpoints_per_namespace,
                   max_accelerators=settings.max_accelerators_per_namespace)


def accelerators_of(spec: dict[str, Any], catalog: Catalog) -> int:
    compute, provider = spec["compute"], spec["provider"]
    inst = catalog.lookup(str(provider.get("vendor")), str(provider.get("region")), str(compute.get("instanceType")),
                          str(compute.get("instanceSize")))
    per_replica = inst.numAccelerators if inst is not None and inst.accelerator != "cpu" else 0
    return per_replica * int(compute["scaling"].get("maxReplica", 1))


def check_quota(session: Session, catalog: Catalog, quota: Quota, *, namespace: str, spec: dict[str, Any],
                replacing: int | None = None) -> None:
    """Raise QuotaExceeded if `spec` (a new endpoint, or the new spec of endpoint id `replacing`) does not fit."""
    query = select(Endpoint.id, Endpoint.spec).where(Endpoint.namespace == namespace,
                                                     Endpoint.desired_state != DesiredState.DELETED.value)
    others = [(row_id, row_spec) for row_id, row_spec in session.execute(query) if row_id != replacing]
    if replacing is None and len(others) + 1 > quota.max_endpoints:
        raise QuotaExceeded(f"quota exceeded: namespace {namespace!r} already has {len(others)} endpoints, "
                            f"the most it may have is {quota.max_endpoints}")
    wanted = accelerators_of(spec, catalog)
    if wanted == 0:
        return
    held = sum(accelerators_of(other, catalog) for _, other in others)
    if held + wanted > quota.max_accelerators:
        raise QuotaExceeded(f"quota exceeded: this endpoint needs {wanted} accelerators at maxReplica and namespace "
                            f"{namespace!r} already holds {held} of its {quota.max_accelerators}",
                            param="compute.scaling.maxReplica")
