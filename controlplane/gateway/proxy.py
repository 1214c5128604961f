"""The data-plane gateway: <base>/endpoints/<namespace>/<name>/<path> → a ready replica of that endpoint.

Responsibilities, in request order: refuse an address that cannot name an endpoint (404, no database read) and a
declared body over `ENDPOINTCTL_GATEWAY_PAYLOAD_LIMIT` (413, before reading it); authorize by endpoint type; refuse
paused endpoints (503, no wake); wake a scaled-to-zero endpoint and hold the request until a replica is ready
(bounded by `X-Scale-Up-Timeout`); pick a replica, the one that served the same prompt start while it has room
(routing.py), queueing while every replica is at its limit; send the request body (in one write when small,
streamed and counted against the limit otherwise); stream the response through without
buffering and without a read timeout (LLM streams may run for minutes); record activity for scale-to-zero.

What a caller learns about endpoints it cannot see is exactly what it learns about endpoints that do not exist:

| caller                                   | endpoint missing | exists, not public, caller cannot see it |
| ---------------------------------------- | ---------------- | ---------------------------------------- |
| no token, or an unknown/revoked one      | 401              | 401                                      |
| a token without access to the namespace  | 404              | 404                                      |

Only callers who can see the endpoint (its namespace's tokens, the admin) are told more: 403 for a `private`
endpoint called from outside its networks, 503 paused/failed/starting. A public endpoint answers everyone. Bodies of
errors are `{"error", "error_type": "gateway"}`; `X-Error-Message` (read by huggingface_hub and our CLI) repeats the
message when it is short printable ASCII and carries the status phrase otherwise. Messages name only namespaces and
names that passed the API's name rules, never other request input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from fastapi.responses import JSONResponse, Response
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from common.config import Settings
from common.internal_token import is_internal_token
from common.models import DesiredState, Endpoint, EndpointState, EventType, record_event
from controlplane.auth import (CSRF_HEADER, SESSION_COOKIE, CsrfRejected, authenticate_request,
                               token_from_session, without_session_cookie)
from controlplane.gateway.routing import (EndpointDirectory, EndpointView, ReplicasSaturated, RoutingPolicy,
                                          prefix_key)
from controlplane.gateway.upstream import (EagerSender, UpstreamConnectError, UpstreamError, UpstreamPool,
                                           UpstreamResponse)
from controlplane.services.enqueue import Enqueue
from controlplane.services.validation import MAX_NAME, NAME_RE, NAMESPACE_RE

log = logging.getLogger(__name__)

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailers",
              b"transfer-encoding", b"upgrade", b"host", b"content-length"}
NOT_FORWARDED = HOP_BY_HOP | {b"authorization", b"x-scale-up-timeout", b"expect",  # uvicorn answered any 100-continue
                              b"x-csrf-token"}  # the dashboard's; its session cookie is taken out of `cookie` below
ACTIVITY_WRITE_EVERY = 5.0
STREAM_THRESHOLD = 256 * 1024
"""Request bodies up to this size are read whole and sent in one write (and may be retried on another replica if
the first cannot be reached); larger ones are streamed, which a replica can receive only once."""
UNKNOWN = ("", "")
"""Metric labels of every request that names no existing endpoint: one bounded series, whatever the path."""
MAX_HEADER_MESSAGE = 512
BEARER = {"WWW-Authenticate": "Bearer"}
TOKEN_REQUIRED = "a token is required: send 'Authorization: Bearer <token>' (only public endpoints answer without one)"
INVALID_ADDRESS = ("no endpoint at this address: a namespace is letters, digits, '.', '_' and '-' (at most 63), an "
                   "endpoint name lowercase letters, digits and '-' (at most 32)")


class GatewayError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message, "error_type": "gateway"}, status_code=self.status,
                            headers={"X-Error-Message": header_text(self.status, self.message), **self.headers})


def header_text(status: int, message: str) -> str:
    """The message as a header value, checked rather than trusted: a failed endpoint's message comes from replica
    output, and a header may carry neither line breaks nor anything outside ASCII."""
    if len(message) <= MAX_HEADER_MESSAGE and message.isascii() and message.isprintable():
        return message
    return HTTPStatus(status).phrase


def not_found(namespace: str, name: str) -> GatewayError:
    """The one answer for an endpoint that does not exist and for one the caller may not see."""
    return GatewayError(404, f"endpoint {namespace}/{name} not found")


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than the gateway's payload limit ({limit} bytes)")


def is_endpoint_address(namespace: str, name: str) -> bool:
    """The API's own name rules (fullmatch): anything else cannot name an endpoint, so no database read is needed."""
    return (len(name) <= MAX_NAME and NAME_RE.fullmatch(name) is not None
            and NAMESPACE_RE.fullmatch(namespace) is not None)


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
        sending = self.upstream.body_pump  # a streamed request body owns `receive` until it is through
        if sending is not None:
            await asyncio.wait([sending])
        while (await receive())["type"] != "http.disconnect":
            pass
        self.upstream.close()


class Gateway:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], authenticate, registry=None, *,
                 enqueue: Enqueue) -> None:
        self.settings = settings
        self.factory = factory
        self.authenticate = authenticate  # (session, raw_token, settings=) -> Principal | None
        self.enqueue = enqueue  # the app's port to the worker (app.state.enqueue), for wakes
        self.directory = EndpointDirectory(factory, RoutingPolicy(
            prefix_routing=settings.gateway_prefix_routing, load_factor=settings.gateway_prefix_load_factor,
            max_inflight=settings.gateway_replica_max_inflight, queue_timeout=settings.gateway_queue_timeout,
            queue_size=settings.gateway_queue_size))
        self.pool = UpstreamPool()  # keep-alive connections to replicas; no read timeout (see upstream.py)
        self._activity_written: dict[int, float] = {}
        self._wake_locks: dict[int, asyncio.Lock] = {}
        registry = registry if registry is not None else CollectorRegistry()
        labels = ["namespace", "endpoint"]
        self.inflight = Gauge("endpointctl_gateway_inflight_requests", "Requests in flight through the gateway",
                              labels, registry=registry)
        self.proxied = Counter("endpointctl_gateway_requests_total", "Requests proxied to replicas, by status",
                               [*labels, "status"], registry=registry)
        self.queued = Gauge("endpointctl_gateway_queued_requests",
                            "Requests waiting in the gateway because every replica is at its in-flight limit",
                            labels, registry=registry)
        self.prefix_routed = Counter("endpointctl_gateway_prefix_routed_total",
                                     "Requests with a prompt key, by whether their replica had lately been sent "
                                     "the same key (warm: it probably holds the prefix)", [*labels, "warm"],
                                     registry=registry)
        self.wakes = Counter("endpointctl_gateway_wakes_total", "Scale-from-zero wakes triggered by requests",
                             labels, registry=registry)
        self.private_networks = [ipaddress.ip_network(n.strip()) for n in settings.private_networks.split(",")
                                 if n.strip()]

    async def close(self) -> None:
        await self.pool.close()

    # -- authorization -------------------------------------------------------------------------------------
    async def _principal_for(self, raw: str):
        """Token → principal through the API's own token cache (controlplane/auth.py): one mechanism, so a revoked
        token is refused here the moment the revoke call returns, as it is on the API routes."""
        return await authenticate_request(raw, self.settings, self._lookup_token)

    def _session_token(self, request: Request) -> str:
        """The dashboard's session cookie, as the API reads it (controlplane/auth.py): the playground calls the
        gateway from the page; unsafe methods need the CSRF header."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            return ""
        try:
            raw = token_from_session(self.settings, cookie, method=request.method,
                                     csrf_header=request.headers.get(CSRF_HEADER))
        except CsrfRejected as exc:
            raise GatewayError(403, str(exc)) from None
        if raw is None:
            raise GatewayError(401, "the dashboard session has expired or is not valid: sign in again", BEARER)
        return raw

    def _lookup_token(self, raw: str):
        with self.factory() as session:
            return self.authenticate(session, raw, settings=self.settings)

    async def authorize(self, request: Request, view: EndpointView | None, namespace: str, name: str) -> None:
        """Raise what this caller is answered, or return if it may use the endpoint; `view` is None when the
        endpoint does not exist, which only callers who could see it are told (see the module docstring)."""
        header = request.headers.get("authorization", "")
        raw = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if raw and is_internal_token(self.settings, raw):
            return  # the worker's own probes: it runs inside the cluster by definition
        if view is not None and view.type == "public":
            return
        if not raw:
            raw = self._session_token(request)
        if not raw:
            raise GatewayError(401, TOKEN_REQUIRED, BEARER)
        principal = await self._principal_for(raw)
        if principal is None:
            raise GatewayError(401, "invalid or revoked token", BEARER)
        if view is None or not principal.can_access(namespace):
            raise not_found(namespace, name)
        if view.type == "private" and not self._from_private_network(request):
            raise GatewayError(403, f"endpoint {namespace}/{name} is private: it accepts traffic only from inside "
                                    f"the cluster/host")

    def _from_private_network(self, request: Request) -> bool:
        host = request.client.host if request.client else None
        try:
            address = ipaddress.ip_address(host) if host else None
        except ValueError:
            return False
        return address is not None and any(address in net for net in self.private_networks)

    # -- scale from zero -----------------------------------------------------------------------------------
    async def wake(self, view: EndpointView) -> None:
        lock = self._wake_locks.setdefault(view.id, asyncio.Lock())
        async with lock:
            def write() -> bool:
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
                    self.enqueue(view.id)
                return bool(result.rowcount)

            if await run_in_threadpool(write):
                log.info("waking %s/%s", view.namespace, view.name)
                self.wakes.labels(view.namespace, view.name).inc()
                self.directory.invalidate(view.namespace, view.name)

    async def visible_view(self, request: Request, namespace: str, name: str,
                           view: EndpointView | None) -> EndpointView:
        """Authorize, then wait for a ready replica: the endpoint as this caller may use it."""
        await self.authorize(request, view, namespace, name)
        if view is None:
            raise not_found(namespace, name)
        return await self.ready_view(request, view)

    async def ready_view(self, request: Request, view: EndpointView) -> EndpointView:
        namespace, name = view.namespace, view.name
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
            current = await self.directory.get(namespace, name)
            if current is None:
                raise not_found(namespace, name)
            view = current
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
                raise GatewayError(400, "X-Scale-Up-Timeout must be a number of seconds") from exc
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
        labels = UNKNOWN
        try:
            if not is_endpoint_address(namespace, name):
                raise GatewayError(404, INVALID_ADDRESS)
            length = self._declared_length(request)
            view = await self.directory.get(namespace, name)
            if view is not None:
                labels = (namespace, name)
            response = await self._handle(request, namespace, name, path, view, length)
        except GatewayError as exc:
            response = exc.response()
        self.proxied.labels(*labels, str(response.status_code)).inc()
        return response

    def _declared_length(self, request: Request) -> int | None:
        """The client's Content-Length (the server has refused a malformed one already); over the limit is a 413
        before any of the body is read."""
        value = request.headers.get("content-length")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        length = int(value)
        if length > self.settings.gateway_payload_limit:
            raise too_large(self.settings.gateway_payload_limit)
        return length

    async def _request_body(self, request: Request) -> tuple[bytes, AsyncIterator[bytes] | None]:
        """The whole body when it is small; otherwise what has arrived and an iterator over the rest, which counts
        it against the limit as it goes (a chunked body has no length to check up front)."""
        limit = self.settings.gateway_payload_limit
        pieces: list[bytes] = []
        size = 0
        while True:
            piece, size, more = await _next_piece(request.receive, size, limit)
            pieces.append(piece)
            if not more:
                return b"".join(pieces), None
            if size >= STREAM_THRESHOLD:
                return b"".join(pieces), _rest_of_body(request.receive, size, limit)

    async def _handle(self, request: Request, namespace: str, name: str, path: str, view: EndpointView | None,
                      length: int | None) -> UpstreamRelay:
        view = await self.visible_view(request, namespace, name, view)
        self.record_activity(view.id)
        inflight = self.inflight.labels(namespace, name)
        body, rest = await self._request_body(request)
        headers = [(k, without_session_cookie(v) if k == b"cookie" else v)
                   for k, v in request.scope["headers"] if k not in NOT_FORWARDED]
        headers = [(k, v) for k, v in headers if v or k != b"cookie"]
        headers.append((b"x-forwarded-for", (request.client.host if request.client else "").encode("latin-1")))
        query = request.scope.get("query_string", b"").decode("latin-1")
        deadline = time.monotonic() + self._hold_timeout(request)
        key = prefix_key(body) if rest is None and len(view.targets) > 1 else None
        while True:
            try:
                target = await self.directory.acquire(
                    view, key, waiting=self.queued.labels(namespace, name),
                    routed=lambda warm: self.prefix_routed.labels(namespace, name, str(warm).lower()).inc())
            except ReplicasSaturated as exc:
                raise GatewayError(503, str(exc), {"Retry-After": str(exc.retry_after)}) from exc
            if target is None:
                view = await self.visible_view(request, namespace, name, await self.directory.get(namespace, name))
                continue
            url = path + (f"?{query}" if query else "")
            inflight.inc()
            try:
                upstream = await self.pool.request(target, request.method, url, headers, body, rest=rest,
                                                   length=length)
            except UpstreamConnectError as exc:
                # Nothing was sent (a streamed body not even its first byte): try another replica, or wait for one.
                self._release(target)
                inflight.dec()
                self.directory.mark_bad(target)
                self.directory.invalidate(namespace, name)
                if time.monotonic() > deadline:
                    raise GatewayError(503, f"no replica of {namespace}/{name} is reachable: {exc}",
                                       {"Retry-After": "5"}) from exc
                await asyncio.sleep(0.2)
                view = await self.visible_view(request, namespace, name, await self.directory.get(namespace, name))
                continue
            except (UpstreamError, ValueError) as exc:  # ValueError: a replica URL we cannot speak to
                # Not retried: part of the request may have reached the replica, and a streamed body cannot be
                # sent twice.
                self._release(target)
                inflight.dec()
                raise GatewayError(502, f"replica of {namespace}/{name} failed: {exc}") from exc
            except BaseException:  # the body's own refusal (413, the client gone) or cancellation
                self._release(target)
                inflight.dec()
                raise
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
        self.directory.release(target)


async def _rest_of_body(receive, size: int, limit: int) -> AsyncIterator[bytes]:
    """The rest of a streamed request body, piece by piece as the server hands it over (uvicorn stops reading the
    client's socket while a piece waits, so nothing piles up here); over the limit or the client gone ends it with
    the gateway's answer."""
    more = True
    while more:
        piece, size, more = await _next_piece(receive, size, limit)
        if piece:
            yield piece


async def _next_piece(receive, size: int, limit: int) -> tuple[bytes, int, bool]:
    """The next piece of a request body, the size received so far and whether more follows; over the limit or the
    client gone is the gateway's answer."""
    message = await receive()
    if message["type"] != "http.request":
        raise GatewayError(400, "the client went away before sending the whole request body")
    piece = message.get("body", b"")
    size += len(piece)
    if size > limit:
        raise too_large(limit)
    return piece, size, message.get("more_body", False)
