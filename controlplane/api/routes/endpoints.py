"""`/v2/endpoint/...`: the Inference Endpoints v2 routes huggingface_hub calls (plus logs and events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from controlplane.api.responses import FastJSONResponse

from controlplane.api.deps import ContextDep
from controlplane.schemas import (EndpointCreate, EndpointPublic, EndpointsPublic, EndpointUpdate, ErrorBody,
                                  EventsPublic, endpoint_to_wire, iso_z)
from controlplane.services.events import list_events
from controlplane.services.logs import endpoint_logs

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 503)}
ONE = {200: {"model": EndpointPublic}, **ERRORS}
router = APIRouter(prefix="/v2/endpoint", tags=["endpoints"], responses=ERRORS)

NameParam = Annotated[str, "endpoint name"]


def _one(row, status_code: int = 200) -> FastJSONResponse:  # noqa: ANN001 - an Endpoint row
    return FastJSONResponse(endpoint_to_wire(row), status_code=status_code)


@router.get("/{namespace}", responses={200: {"model": EndpointsPublic}},
            summary="List the endpoints of a namespace (all of them unless limit is given)")
def read_endpoints(namespace: str, ctx: ContextDep, limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> FastJSONResponse:
    with ctx:
        rows = ctx.endpoints().list(namespace, limit=limit, offset=offset)
        return FastJSONResponse({"items": [endpoint_to_wire(r) for r in rows]})


@router.post("/{namespace}", status_code=201, responses={201: {"model": EndpointPublic}},
             summary="Create an endpoint (stored as pending; the worker deploys it)")
def create_endpoint(namespace: str, body: EndpointCreate, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().create(namespace, body), 201)


@router.get("/{namespace}/{name}", responses=ONE, summary="Read one endpoint")
def read_endpoint(namespace: str, name: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().get(namespace, name))


@router.put("/{namespace}/{name}", responses=ONE,
            summary="Update an endpoint: merges the fields sent (image, env, secrets and tags are replaced whole)")
def update_endpoint(namespace: str, name: str, body: EndpointUpdate, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().update(namespace, name, body))


@router.delete("/{namespace}/{name}", status_code=202, responses={202: {"model": EndpointPublic}},
               summary="Delete an endpoint (the worker removes its replicas, then the record)")
def delete_endpoint(namespace: str, name: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().delete(namespace, name), 202)


@router.post("/{namespace}/{name}/pause", responses=ONE, summary="Pause: no replicas until resumed")
def pause_endpoint(namespace: str, name: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().pause(namespace, name))


@router.post("/{namespace}/{name}/resume", responses=ONE,
             summary='Resume a paused or scaled-to-zero endpoint (400 "already running" if it runs)')
def resume_endpoint(namespace: str, name: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().resume(namespace, name))


@router.post("/{namespace}/{name}/scale-to-zero", responses=ONE,
             summary="Scale to zero now; the next request through the gateway wakes it")
def scale_to_zero_endpoint(namespace: str, name: str, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return _one(ctx.endpoints().scale_to_zero(namespace, name))


@router.get("/{namespace}/{name}/events", responses={200: {"model": EventsPublic}},
            summary="Events of an endpoint, newest first; page with ?before=<nextBefore>")
def read_endpoint_events(namespace: str, name: str, ctx: ContextDep,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> FastJSONResponse:
    with ctx:
        row = ctx.endpoints().get(namespace, name)
        events, next_before = list_events(ctx.session, row, limit=limit, before=before)
        return FastJSONResponse({"items": [{"id": e.id, "type": e.type, "reason": e.reason, "message": e.message,
                                          "createdAt": iso_z(e.created_at)} for e in events],
                               "nextBefore": next_before})


@router.get("/{namespace}/{name}/logs", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "log lines, oldest first"}},
            summary="Replica logs from the provider (secrets masked); ?follow=true streams")
def read_endpoint_logs(namespace: str, name: str, ctx: ContextDep,
                       tail: Annotated[int, Query(ge=0, le=100_000)] = 200, follow: bool = False,
                       replica: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$",
                                                            description="only this replica (as `[name]` prefixes show)")]
                       = None,
                       since: Annotated[int | None, Query(ge=1, le=10 * 365 * 86400,
                                                          description="only lines of the last N seconds")] = None,
                       ) -> Response:
    with ctx:
        row = ctx.endpoints().get(namespace, name)
        lines = endpoint_logs(ctx.settings, row, tail=tail, follow=follow, replica=replica, since_seconds=since)
        return StreamingResponse(lines, media_type="text/plain; charset=utf-8")
