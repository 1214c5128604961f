"""The data-plane gateway: <base>/endpoints/<namespace>/<name>/<path> → a ready replica of that endpoint.

Responsibilities, in request order: authorize by endpoint type; refuse paused endpoints (503, no wake); wake a
scaled-to-zero endpoint and hold the request until a replica is ready (bounded by `X-Scale-Up-Timeout`); pick the
replica with the fewest outstanding requests; stream the response through without buffering and without a read
timeout (LLM streams may run for minutes); record activity for scale-to-zero.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from datetime import UTC, datetime

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from fastapi.responses import JSONResponse, Response
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from controlplane.auth import authenticate_request
from controlplane.core.config import Settings
from controlplane.gateway.routing import EndpointDirectory, EndpointView
from controlplane.gateway.tokens import is_internal_token
from controlplane.gateway.upstream import (EagerSender, UpstreamConnectError, UpstreamError, UpstreamPool,
                                           UpstreamResponse)
from controlplane.models import DesiredState, Endpoint, EndpointState, EventType, record_event

log = logging.getLogger(__name__)

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailers",
              b"transfer-encoding", b"upgrade", b"host", b"content-length"}
NOT_FORWARDED = HOP_BY_HOP | {b"authorization", b"x-scale-up-timeout", b"expect"}  # uvicorn answered any 100-continue
ACTIVITY_WRITE_EVERY = 5.0


class GatewayError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message, "error_type": "gateway"}, status_code=self.status,
                            headers={"X-Error-Message": self.message, **self.headers})


class UpstreamRelay:
    """ASGI response that relays a replica's response unchanged, each chunk as it arrives.

    The body is pushed to the client from the upstream socket's callback (:class:`EagerSender`), so a streamed token
    costs no task wake-up here. The one extra task notices the client leaving and closes the upstream connection,
    which cancels the generation on the replica. `done(complete)` runs exactly once, however the response ends.
    """

    def __init__(self, upstream: UpstreamResponse, done) -> None:
        self.upstream = upstream
        self.done = done
        # Content-Length passes through (the body is relayed byte for byte, never decompressed); framing otherwise
        # is uvicorn's own.
        headers = [(k.lower(), v) for k, v in upstream.raw_headers]
        headers = [(k, v) for k, v in headers
                   if k == b"content-length" or (k not in HOP_BY_HOP and k not in (b"date", b"server"))]
        if b"text/event-stream" in (upstream.header(b"content-type") or b""):
            headers = [(k, v) for k, v in headers if k not in (b"cache-control", b"x-accel-buffering")]
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.headers = headers
        self.status_code = upstream.status

    async def __call__(self, scope, receive, send) -> None:
        complete = False
        watcher = asyncio.get_running_loop().create_task(self._close_when_client_leaves(receive))
        failed: list[BaseException] = []

        def send_failed(exc: BaseException) -> None:
            failed.append(exc)
            self.upstream.close()

        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.headers})
            sender = EagerSender(send, self.upstream.pause_reading, self.upstream.resume_reading, send_failed)
            await self.upstream.stream_to(sender)
            await sender.drain()
            complete = not watcher.done() and not failed
            if complete:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            # Headers are gone already: ending without the last chunk tells the client the stream broke.
            if not watcher.done() and not failed:
                log.warning("replica stream broke mid-response: %s", exc)
        finally:
            watcher.cancel()
            if failed:
                log.warning("relaying to the client failed: %s", failed[0])
            self.done(complete)

    async def _close_when_client_leaves(self, receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.upstream.close()


class Gateway:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], authenticate, registry=None) -> None:
        self.settings = settings
        self.factory = factory
        self.authenticate = authenticate  # (session, raw_token, settings=) -> Principal | None
        self.directory = EndpointDirectory(factory)
        self.pool = UpstreamPool()  # keep-alive connections to replicas; no read timeout (see upstream.py)
        self._activity_written: dict[int, float] = {}
        self._wake_locks: dict[int, asyncio.Lock] = {}
        registry = registry if registry is not None else CollectorRegistry()
        labels = ["namespace", "endpoint"]
        self.inflight = Gauge("endpointctl_gateway_inflight_requests", "Requests in flight through the gateway",
                              labels, registry=registry)
        self.proxied = Counter("endpointctl_gateway_requests_total", "Requests proxied to replicas, by status",
                               [*labels, "status"], registry=registry)
        self.wakes = Counter("endpointctl_gateway_wakes_total", "Scale-from-zero wakes triggered by requests",
                             labels, registry=registry)
        self.private_networks = [ipaddress.ip_network(n.strip()) for n in settings.private_networks.split(",") if n.strip()]

    async def close(self) -> None:
        await self.pool.close()

    # -- authorization -------------------------------------------------------------------------------------
    async def _principal_for(self, raw: str):
        """Token → principal through the API's own token cache (controlplane/auth.py): one mechanism, so a revoked
        token is refused here the moment the revoke call returns, as it is on the API routes."""
        return await authenticate_request(raw, self.settings, self._lookup_token)

    def _lookup_token(self, raw: str):
        with self.factory() as session:
            return self.authenticate(session, raw, settings=self.settings)

    async def authorize(self, request: Request, view: EndpointView) -> None:
        header = request.headers.get("authorization", "")
        raw = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if raw and is_internal_token(self.settings, raw):
            return  # the worker's own probes: it runs inside the cluster by definition
        if view.type == "private":
            host = request.client.host if request.client else None
            try:
                address = ipaddress.ip_address(host) if host else None
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self.private_networks):
                raise GatewayError(403, f"endpoint {view.namespace}/{view.name} is private: it accepts traffic only "
                                        f"from inside the cluster/host")
        if view.type == "public":
            return
        if not raw:
            raise GatewayError(401, f"endpoint {view.namespace}/{view.name} requires a token: send "
                                    f"'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
        principal = await self._principal_for(raw)
        if principal is None:
            raise GatewayError(401, "invalid or revoked token", {"WWW-Authenticate": "Bearer"})
        if not principal.can_access(view.namespace):
            raise GatewayError(403, f"this token has no access to namespace {view.namespace!r}")

    # -- scale from zero -----------------------------------------------------------------------------------
    async def wake(self, view: EndpointView) -> None:
        lock = self._wake_locks.setdefault(view.id, asyncio.Lock())
        async with lock:
            def write() -> bool:
                from worker.celery_app import enqueue_reconcile

                with self.factory() as session:
                    result = session.execute(
                        update(Endpoint)
                        .where(Endpoint.id == view.id, Endpoint.desired_state == DesiredState.SCALED_TO_ZERO.value)
                        .values(desired_state=DesiredState.RUNNING.value, generation=Endpoint.generation + 1,
                                last_activity_at=datetime.now(UTC), updated_at=datetime.now(UTC))
                    )
                    if result.rowcount:
                        endpoint = session.get(Endpoint, view.id)
                        record_event(session, endpoint, type=EventType.NORMAL, reason="Waking",
                                     message="request received while scaled to zero; scaling up")
                    session.commit()
                if result.rowcount:
                    enqueue_reconcile(view.id)
                return bool(result.rowcount)

            if await run_in_threadpool(write):
                log.info("waking %s/%s", view.namespace, view.name)
                self.wakes.labels(view.namespace, view.name).inc()
                self.directory.invalidate(view.namespace, view.name)

    async def ready_view(self, request: Request, namespace: str, name: str) -> EndpointView:
        view = await self.directory.get(namespace, name)
        if view is None:
            raise GatewayError(404, f"endpoint {namespace}/{name} not found")
        await self.authorize(request, view)
        if view.targets and view.desired_state == DesiredState.RUNNING.value:
            return view
        if view.desired_state == DesiredState.PAUSED.value:
            raise GatewayError(503, f"endpoint {namespace}/{name} is paused; resume it to serve requests",
                               {"Retry-After": "60"})
        if view.desired_state == DesiredState.DELETED.value:
            raise GatewayError(404, f"endpoint {namespace}/{name} is being deleted")
        if view.state in (EndpointState.FAILED.value,) and not view.targets:
            raise GatewayError(503, f"endpoint {namespace}/{name} failed: {view.message or 'see its events'}")
        if view.desired_state == DesiredState.SCALED_TO_ZERO.value:
            await self.wake(view)
        timeout = self._hold_timeout(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            view = await self.directory.get(namespace, name)
            if view is None:
                raise GatewayError(404, f"endpoint {namespace}/{name} not found")
            if view.desired_state == DesiredState.PAUSED.value:
                raise GatewayError(503, f"endpoint {namespace}/{name} is paused; resume it to serve requests",
                                   {"Retry-After": "60"})
            if view.targets:
                return view
            if view.state == EndpointState.FAILED.value:
                raise GatewayError(503, f"endpoint {namespace}/{name} failed: {view.message or 'see its events'}")
        raise GatewayError(503, f"endpoint {namespace}/{name} is starting (state: {view.state}); no replica became "
                                f"ready within {timeout:g}s", {"Retry-After": str(max(1, math.ceil(timeout / 4)))})

    def _hold_timeout(self, request: Request) -> float:
        raw = request.headers.get("x-scale-up-timeout")
        if raw:
            try:
                value = float(raw)
            except ValueError as exc:
                raise GatewayError(400, f"X-Scale-Up-Timeout must be a number of seconds, got {raw!r}") from exc
            if value < 0 or not math.isfinite(value):
                raise GatewayError(400, "X-Scale-Up-Timeout must be a non-negative number of seconds")
            return min(value, 3600.0)
        return self.settings.scale_up_timeout

    # -- activity ------------------------------------------------------------------------------------------
    def record_activity(self, endpoint_id: int) -> None:
        now = time.monotonic()
        if now - self._activity_written.get(endpoint_id, 0.0) < ACTIVITY_WRITE_EVERY:
            return
        self._activity_written[endpoint_id] = now

        def write() -> None:
            with self.factory() as session:
                session.execute(update(Endpoint).where(Endpoint.id == endpoint_id)
                                .values(last_activity_at=datetime.now(UTC)))
                session.commit()

        task = asyncio.get_running_loop().run_in_executor(None, write)
        task.add_done_callback(lambda f: f.exception() and log.warning("activity write failed: %s", f.exception()))

    # -- proxying ------------------------------------------------------------------------------------------
    async def handle(self, request: Request, namespace: str, name: str, path: str) -> Response | UpstreamRelay:
        try:
            response = await self._handle(request, namespace, name, path)
        except GatewayError as exc:
            response = exc.response()
        self.proxied.labels(namespace, name, str(response.status_code)).inc()
        return response

    async def _handle(self, request: Request, namespace: str, name: str, path: str) -> UpstreamRelay:
        view = await self.ready_view(request, namespace, name)
        self.record_activity(view.id)
        inflight = self.inflight.labels(namespace, name)
        body = await request.body()
        headers = [(k, v) for k, v in request.scope["headers"] if k not in NOT_FORWARDED]
        headers.append((b"x-forwarded-for", (request.client.host if request.client else "").encode("latin-1")))
        query = request.scope.get("query_string", b"").decode("latin-1")
        deadline = time.monotonic() + self._hold_timeout(request)
        while True:
            target = self.directory.pick(view)
            if target is None:
                view = await self.ready_view(request, namespace, name)
                continue
            url = path + (f"?{query}" if query else "")
            self.directory.outstanding[target] = self.directory.outstanding.get(target, 0) + 1
            inflight.inc()
            try:
                upstream = await self.pool.request(target, request.method, url, headers, body)
            except UpstreamConnectError as exc:
                self._release(target)
                inflight.dec()
                # The replica went away between our last look and now: try another, or wait for one.
                self.directory.mark_bad(target)
                self.directory.invalidate(namespace, name)
                if time.monotonic() > deadline:
                    raise GatewayError(503, f"no replica of {namespace}/{name} is reachable: {exc}",
                                       {"Retry-After": "5"}) from exc
                await asyncio.sleep(0.2)
                view = await self.ready_view(request, namespace, name)
                continue
            except (UpstreamError, ValueError) as exc:  # ValueError: a replica URL we cannot speak to
                self._release(target)
                inflight.dec()
                raise GatewayError(502, f"replica of {namespace}/{name} failed: {exc}") from exc
            break
        released = False

        def done(complete: bool) -> None:
            nonlocal released
            if released:
                return
            released = True
            if complete:
                upstream.release()  # back to the pool for the next request
            else:
                upstream.close()  # the client left: drop the connection so the replica frees the slot at once
            self._release(target)
            inflight.dec()

        return UpstreamRelay(upstream, done)

    def _release(self, target: str) -> None:
        self.directory.outstanding[target] = max(0, self.directory.outstanding.get(target, 1) - 1)
