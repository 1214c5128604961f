"""`GET /v2/provider/{namespace}`: the hardware catalog, with the namespace's accelerator use as quota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from controlplane.api.responses import FastJSONResponse
from sqlalchemy import select

from common.models import ClusterCapacity, DesiredState, Endpoint
from controlplane.api.deps import ContextDep

# Capacity the worker observed longer ago than this is not shown (the worker or the cluster may be gone).
CAPACITY_MAX_AGE = timedelta(minutes=5)

router = APIRouter(prefix="/v2/provider", tags=["hardware"])


@router.get("/{namespace}", summary="Hardware catalog: vendors → regions → computes")
def read_provider_catalog(namespace: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        ctx.endpoints().authorize(namespace)
        used: dict[str, int] = {}
        rows = ctx.session.execute(select(Endpoint.spec, Endpoint.desired_replicas).where(
            Endpoint.namespace == namespace, Endpoint.desired_state == DesiredState.RUNNING.value))
        for spec, desired_replicas in rows:
            compute = spec["compute"]
            provider = spec["provider"]
            inst = ctx.catalog.lookup(provider["vendor"], provider["region"], compute["instanceType"],
                                      compute["instanceSize"])
            if inst is not None and inst.numAccelerators:
                replicas = desired_replicas if desired_replicas is not None else max(1, compute["scaling"]["minReplica"])
                used[inst.instanceType] = used.get(inst.instanceType, 0) + inst.numAccelerators * replicas
        fresh_after = datetime.now(UTC) - CAPACITY_MAX_AGE
        capacity = {row.instance_type: {"allocatable": row.allocatable, "used": row.used,
                                        "max_allocatable_per_node": row.max_allocatable_per_node,
                                        "max_free_per_node": row.max_free_per_node}
                    for row in ctx.session.scalars(select(ClusterCapacity).where(ClusterCapacity.observed_at >= fresh_after))}
        return FastJSONResponse(ctx.catalog.to_wire(used, capacity))
