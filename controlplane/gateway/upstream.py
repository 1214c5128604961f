"""The gateway's HTTP/1.1 client for replicas: a keep-alive pool and a relay that costs no task wake-up per chunk.

Why not aiohttp (which the gateway used before): every streamed token crosses the gateway, and on one host each
CPU cycle spent here is taken from the replicas. With aiohttp a chunk went socket → protocol → parser →
StreamReader → wake the relay task → ASGI `send`: ~59 µs of CPU per chunk on the CI machine, where a bare
byte-pumping proxy costs ~25. Here the response body is parsed by httptools (llhttp, the parser uvicorn itself
uses) inside the connection's `data_received`, and each decoded piece goes straight to the client through
:class:`EagerSender`, in the same callback. Requests are small and few by comparison, so the request side is
plain: one `transport.write` of a serialized request. A body too large to hold (an upload) is streamed instead:
written as it arrives from the client, with the client's Content-Length or chunked, pausing while the replica's
socket is full, on a fresh connection and never retried, since a body that has left cannot be sent again.

Scope, on purpose: plain HTTP to replica base URLs (the local provider's loopback ports, a Kubernetes Service
inside the cluster); no redirects, no TLS, no decompression (bodies are relayed byte for byte).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from urllib.parse import urlsplit

import httptools

IDLE_KEEPALIVE_S = 4.0
"""Pooled connections idle longer than this are closed rather than reused. Below uvicorn's default
``timeout_keep_alive`` (5 s, what replicas run with), so the gateway does not pick a connection the replica is
closing at that very moment."""


class UpstreamError(Exception):
    """The replica could not be reached or broke the response."""


class UpstreamConnectError(UpstreamError):
    """Nothing was received, and no byte of a streamed body was sent: the request may be retried on another
    replica."""


class Origin:
    """Host and port of a replica base URL (``http://host:port``), parsed once."""

    __slots__ = ("host", "port", "host_header", "base_path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"replica URL must be http://host[:port], got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode("latin-1")
        self.base_path = parts.path.rstrip("/")


class UpstreamResponse:
    """Status and headers of a replica response whose body is still arriving (see :meth:`stream_to`)."""

    def __init__(self, connection: _Connection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._connection = connection
        self.status = status
        self.raw_headers = headers

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        return next((v for k, v in self.raw_headers if k.lower() == name), None)

    @property
    def body_pump(self) -> asyncio.Task | None:
        """The task still sending a streamed request body (a replica may answer before reading all of it)."""
        return self._connection.pump

    def stream_to(self, sink: Callable[[bytes], None]) -> asyncio.Future:
        """Deliver the body to ``sink`` as it arrives (from inside the socket callback). The returned future
        resolves when the body is complete, or raises :class:`UpstreamError` if the replica broke it off."""
        return self._connection.attach(sink)

    def pause_reading(self) -> None:
        self._connection.pause()

    def resume_reading(self) -> None:
        self._connection.resume()

    def release(self) -> None:
        """Body fully read: the connection goes back to the pool if the replica keeps it alive."""
        self._connection.finish()

    def close(self) -> None:
        """Abandon the response: the connection is closed, which tells the replica the client has gone."""
        self._connection.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, running one request at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.write_paused = False  # the replica's socket is full (asyncio flow control): a streamed body waits
        self._writable: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future | None = None
        self.body_done: asyncio.Future | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.sink: Callable[[bytes], None] | None = None
        self.backlog: list[bytes] = []
        self.received_any = False
        self.message_complete = False
        self.keep_alive = False
        self.head_only = False
        self.pump: asyncio.Task | None = None  # sends a streamed request body
        self.body_sent = True

    # -- request -------------------------------------------------------------------------------------------
    def send_request(self, request: bytes, *, head_only: bool) -> asyncio.Future:
        self._reset()
        loop = asyncio.get_running_loop()
        self.head = loop.create_future()
        self.body_done = loop.create_future()
        self.head_only = head_only
        self.transport.write(request)
        return self.head

    def start_pump(self, rest: AsyncIterator[bytes], *, chunked: bool) -> asyncio.Task:
        """Send the rest of a streamed body from its own task, while the response head is awaited (a replica may
        answer early, with an error)."""
        self.body_sent = False
        self.pump = asyncio.get_running_loop().create_task(self._send_body(rest, chunked))
        self.pump.add_done_callback(self._pump_done)
        return self.pump

    async def _send_body(self, rest: AsyncIterator[bytes], chunked: bool) -> None:
        async with aclosing(rest):
            async for piece in rest:
                if self.closed:
                    raise UpstreamError("replica closed the connection while the request body was being sent")
                if chunked:
                    self.transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
                else:
                    self.transport.write(piece)
                if self.write_paused:
                    await self._wait_writable()
        if self.closed:
            raise UpstreamError("replica closed the connection while the request body was being sent")
        if chunked:
            self.transport.write(b"0\r\n\r\n")
        self.body_sent = True

    def _pump_done(self, task: asyncio.Task) -> None:
        # The body's source refused to go on (over the limit, client gone) or the replica went away: the replica
        # holds half a request, so the connection is done for.
        if not task.cancelled() and task.exception() is not None:
            self.abort()

    async def _wait_writable(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()
        try:
            await self._writable
        finally:
            self._writable = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head is None:  # bytes on an idle connection: the replica is not speaking HTTP to us
            self.abort()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from replica: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.head is not None and not self.message_complete:
            reason = f"replica closed the connection{f': {exc}' if exc else ''}"
            retryable = not self.received_any and self.pump is None
            self._fail(UpstreamConnectError(reason) if retryable else UpstreamError(reason))
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(UpstreamError("replica closed the connection while the request body was "
                                                       "being sent"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim response (100 Continue): the real head follows
            self.headers = []
            return
        if not self.head.done():
            self.head.set_result(UpstreamResponse(self, status, self.headers))
        if self.head_only:  # a HEAD response announces a length but has no body; llhttp cannot know that
            self.message_complete = True
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self.backlog:
            self.sink(body)
        else:
            self.backlog.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self.message_complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is done
        self._complete()

    # -- relay ---------------------------------------------------------------------------------------------
    def attach(self, sink: Callable[[bytes], None]) -> asyncio.Future:
        if self.backlog:
            sink(b"".join(self.backlog))
            self.backlog.clear()
        self.sink = sink
        return self.body_done

    def _complete(self) -> None:
        if self.body_done is not None and not self.body_done.done():
            self.body_done.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        for future in (self.head, self.body_done):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever awaits it sees it; nobody else needs a warning
        self.sink = None

    def finish(self) -> None:
        # A replica that answered before reading the whole body has the rest of it coming: not reusable.
        keep = (self.message_complete and self.keep_alive and not self.head_only and not self.closed
                and self.body_sent)
        self.head = self.body_done = None
        if keep:
            self.pump = None
            self.pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.sink = None
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        if not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections per replica (no limit: the replica's own MAX_CONCURRENT_REQUESTS is the bound)."""

    def __init__(self, *, connect_timeout: float = 5.0, idle_keepalive: float = IDLE_KEEPALIVE_S) -> None:
        self.connect_timeout = connect_timeout
        self.idle_keepalive = idle_keepalive
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self._origins: dict[str, Origin] = {}

    def origin(self, base_url: str) -> Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            if len(self._origins) > 10_000:
                self._origins.clear()
            origin = self._origins[base_url] = Origin(base_url)
        return origin

    async def request(self, base_url: str, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes, *, rest: AsyncIterator[bytes] | None = None,
                      length: int | None = None) -> UpstreamResponse:
        """Send one request and return once the response head has arrived (the body streams afterwards).

        A pooled connection the replica closed while idle shows up as a close with nothing received; the request is
        then sent once more on a fresh connection (nothing reached the application). Any other failure to connect
        or a close before any response byte raises :class:`UpstreamConnectError`.

        With `rest`, `body` is only the beginning of the body and `rest` yields the remainder (`length`: the whole
        body's size, None to send it chunked); an exception `rest` raises ends the request and is raised here if the
        replica has not answered yet."""
        origin = self.origin(base_url)
        head_only = method.upper() == "HEAD"
        if rest is not None:
            return await self._request_streamed(origin, method, target, headers, body, rest, length,
                                                head_only=head_only)
        request = _serialize(method, origin, target, headers, body)
        connection = self._take((origin.host, origin.port))
        if connection is not None:
            try:
                return await connection.send_request(request, head_only=head_only)
            except UpstreamConnectError:
                pass  # stale keep-alive connection: retry on a new one below
        connection = await self._connect(origin)
        return await connection.send_request(request, head_only=head_only)

    async def _request_streamed(self, origin: Origin, method: str, target: str, headers: list[tuple[bytes, bytes]],
                                first: bytes, rest: AsyncIterator[bytes], length: int | None, *,
                                head_only: bool) -> UpstreamResponse:
        # A fresh connection: a pooled one the replica closed while idle would swallow part of a body that cannot
        # be sent again. Connecting is the last point where the caller may still retry elsewhere.
        connection = await self._connect(origin)
        if length is None:
            framing, first = b"transfer-encoding: chunked\r\n", _chunk(first)
        else:
            framing = b"content-length: %d\r\n" % length
        head = connection.send_request(b"".join([*_head_lines(method, origin, target, headers), framing, b"\r\n",
                                                 first]), head_only=head_only)
        pump = connection.start_pump(rest, chunked=length is None)
        await asyncio.wait([head, pump], return_when=asyncio.FIRST_COMPLETED)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            # The body's own failure is the cause, unless a response had arrived (the connection's loss, which
            # ending the pump caused, may have failed `head` meanwhile).
            if not head.done() or head.exception() is not None:
                connection.abort()
                raise pump.exception()
        try:
            return await head
        except BaseException:
            connection.abort()  # stops the pump too
            raise

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        key = (origin.host, origin.port)
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key), origin.host, origin.port),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {origin.host}:{origin.port}: "
                                       f"{exc or type(exc).__name__}") from exc
        return connection

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # most recently used first: the one least likely to be timing out
            if not connection.closed and now - connection.idle_since < self.idle_keepalive:
                return connection
            connection.abort()
        return None

    def put(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, collections.deque()).append(connection)

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()


def _head_lines(method: str, origin: Origin, target: str, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    lines = [f"{method} {origin.base_path}/{target.lstrip('/')} HTTP/1.1\r\n".encode("latin-1"),
             b"host: ", origin.host_header, b"\r\n"]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    return lines


def _chunk(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece) if piece else b""


def _serialize(method: str, origin: Origin, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = _head_lines(method, origin, target, headers)
    if body or method.upper() not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines += [b"\r\n", body]
    return b"".join(lines)


class EagerSender:
    """Feeds body chunks to an ASGI ``send`` from a socket callback, without a task per chunk.

    Calling ``send`` makes a coroutine; stepping it once runs it to completion whenever the server can take the
    bytes at once (uvicorn: a ``transport.write``), which is the steady state of a token stream. Only if it has to
    wait (the client reads slower than the replica writes: uvicorn's flow control) does the rest run in a task,
    and the upstream socket stops being read until it is done, so backpressure reaches the replica instead of
    piling up here. Chunks that arrive meanwhile are sent together afterwards, in order.
    """

    def __init__(self, send, pause: Callable[[], None], resume: Callable[[], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.send = send
        self.pause = pause
        self.resume = resume
        self.on_error = on_error
        self.pending: asyncio.Task | None = None
        self.backlog: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        if self.pending is not None:
            self.backlog.append(chunk)
            return
        coro = self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the server refused the message; the relay ends the response
            self.on_error(exc)
            return
        self.pause()
        self.pending = asyncio.get_running_loop().create_task(self._finish(coro, waiting_on))

    async def _finish(self, coro, waiting_on) -> None:
        try:
            while True:
                if waiting_on is None:  # a bare yield (asyncio.sleep(0)): just give the loop a turn
                    await asyncio.sleep(0)
                else:  # a future: wait for it without taking its outcome, which is the coroutine's to see
                    await asyncio.wait([waiting_on])
                try:
                    waiting_on = coro.send(None)
                except StopIteration:
                    break
            while self.backlog:
                chunk = b"".join(self.backlog)
                self.backlog.clear()
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            coro.close()
            raise
        except Exception as exc:  # noqa: BLE001 - see __call__
            coro.close()
            self.on_error(exc)
        finally:
            self.pending = None
        self.resume()

    async def drain(self) -> None:
        """Wait until every chunk handed over so far has been sent."""
        while self.pending is not None:
            await asyncio.shield(self.pending)
