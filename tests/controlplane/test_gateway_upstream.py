"""The gateway's replica client and relay (controlplane/gateway/upstream.py) against real sockets.

The upstream side is a scripted asyncio server, so each test controls the exact bytes and timing a replica sends
(chunked or sized bodies, keep-alive, closes at the worst moment); the client side of the relay is uvicorn with
httpx, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
import pytest
import uvicorn

from controlplane.gateway.proxy import UpstreamRelay
from controlplane.gateway.upstream import EagerSender, UpstreamConnectError, UpstreamError, UpstreamPool

SSE = [b'data: {"token": %d}\n\n' % i for i in range(20)]


class ScriptedReplica:
    """A loopback HTTP server whose response to each request is a test-supplied coroutine."""

    def __init__(self, script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedReplica:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        nth = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if b"transfer-encoding: chunked" in head.lower():
                    body = await read_chunked(reader)
                else:
                    body = await reader.readexactly(length) if length else b""
                self.requests.append((head, body))
                nth += 1
                self.reader = reader
                if await self.script(writer, head, nth) == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readexactly(2)
    return bytes(body)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def collect(pool: UpstreamPool, url: str, method: str = "POST", target: str = "v1/x", body: bytes = b"{}"):
    response = await pool.request(url, method, target, [(b"x-test", b"1")], body)
    received: list[bytes] = []
    await response.stream_to(received.append)
    response.release()
    return response, b"".join(received)


async def test_chunked_stream_is_decoded_and_the_connection_reused():
    async def script(writer, head, nth):
        writer.write(SSE_HEAD)
        for event in SSE:
            writer.write(chunked(event)[:-5])  # one chunk per event, terminator at the end
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()
        for _ in range(3):
            response, data = await collect(pool, replica.url)
            assert response.status == 200 and response.header(b"Content-Type") == b"text/event-stream"
            assert data == b"".join(SSE)
        assert replica.connections == 1  # keep-alive: one connection for the three requests
        head, body = replica.requests[0]
        assert head.startswith(b"POST /v1/x HTTP/1.1\r\n") and b"x-test: 1" in head and b"content-length: 2" in head
        assert body == b"{}"
        await pool.close()


async def test_sized_body_head_and_no_content():
    async def script(writer, head, nth):
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        elif b"/empty" in head:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found")

    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()
        response, data = await collect(pool, replica.url, "GET", "missing", b"")
        assert response.status == 404 and data == b"not found"
        assert b"content-length" not in replica.requests[0][0]  # a GET without a body announces none
        response, data = await collect(pool, replica.url, "HEAD", "", b"")
        assert response.status == 200 and data == b"" and response.header(b"content-length") == b"5"
        response, data = await collect(pool, replica.url, "GET", "empty", b"")
        assert response.status == 204 and data == b""
        await pool.close()


async def test_a_pooled_connection_the_replica_dropped_is_replaced_transparently():
    async def script(writer, head, nth):
        if nth > 1:
            return "close"  # keep-alive expired on the replica's side just as the request arrived: no answer
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()
        assert (await collect(pool, replica.url, target="first"))[1] == b"ok"
        assert (await collect(pool, replica.url, target="second"))[1] == b"ok"
        # The second request went out on the pooled connection, got nothing back, and was sent again on a new one.
        assert [h.split(b" ")[1] for h, _ in replica.requests] == [b"/first", b"/second", b"/second"]
        assert replica.connections == 2
        await pool.close()


async def test_connection_close_from_the_replica_is_honoured():
    async def script(writer, head, nth):
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()
        for _ in range(2):
            assert (await collect(pool, replica.url))[1] == b"ok"
        assert replica.connections == 2 and len(replica.requests) == 2  # no request was sent into a closing socket
        await pool.close()


async def test_failures_are_typed():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    pool = UpstreamPool()
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.request(dead, "GET", "health", [], b"")

    async def hang_up(writer, head, nth):
        return "close"  # read the request, answer nothing

    async with ScriptedReplica(hang_up) as replica:
        with pytest.raises(UpstreamConnectError, match="closed the connection"):
            await pool.request(replica.url, "POST", "v1/x", [], b"{}")

    async def break_mid_body(writer, head, nth):
        writer.write(SSE_HEAD + chunked(SSE[0])[:-5])
        await writer.drain()
        await asyncio.sleep(0.05)
        return "close"

    async with ScriptedReplica(break_mid_body) as replica:
        response = await pool.request(replica.url, "POST", "v1/x", [], b"{}")
        received: list[bytes] = []
        with pytest.raises(UpstreamError) as info:
            await response.stream_to(received.append)
        assert not isinstance(info.value, UpstreamConnectError)  # bytes arrived: not safe to retry
        assert received == [SSE[0]]
        response.close()

    async def garbage(writer, head, nth):
        writer.write(b"SPDY/9 what\r\n\r\n")

    async with ScriptedReplica(garbage) as replica:
        with pytest.raises(UpstreamError, match="malformed"):
            await pool.request(replica.url, "GET", "", [], b"")
    with pytest.raises(ValueError, match="http://host"):
        await pool.request("https://example.invalid", "GET", "", [], b"")
    await pool.close()


async def test_eager_sender_sends_inline_and_applies_backpressure_when_send_has_to_wait():
    sent: list[bytes] = []
    gate = asyncio.Event()
    gate.set()
    calls = {"pause": 0, "resume": 0}

    async def send(message):
        if not gate.is_set():
            await gate.wait()
        sent.append(message["body"])

    sender = EagerSender(send, lambda: calls.__setitem__("pause", calls["pause"] + 1),
                         lambda: calls.__setitem__("resume", calls["resume"] + 1), pytest.fail)
    sender(b"a")
    assert sent == [b"a"] and sender.pending is None  # sent inside the call: no task, no loop turn
    gate.clear()
    sender(b"b")  # the client is slow: this one has to wait
    assert calls["pause"] == 1 and sender.pending is not None
    sender(b"c")
    sender(b"d")
    assert sent == [b"a"]
    gate.set()
    await sender.drain()
    assert sent == [b"a", b"b", b"cd"] and calls == {"pause": 1, "resume": 1}  # in order; the backlog in one send

    errors: list[BaseException] = []

    async def broken(message):
        raise RuntimeError("response already completed")

    EagerSender(broken, pytest.fail, pytest.fail, errors.append)(b"x")
    assert isinstance(errors[0], RuntimeError)


async def _serve(app) -> tuple[uvicorn.Server, str, asyncio.Task]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, f"http://127.0.0.1:{port}", task


async def test_relay_through_uvicorn_streams_every_byte_and_a_leaving_client_closes_the_upstream():
    upstream_eof = asyncio.Event()

    async def script(writer, head, nth):
        writer.write(SSE_HEAD)
        for i, event in enumerate(SSE):
            writer.write(chunked(event)[:-5])
            await writer.drain()
            if b"/slow" in head and i == 2:
                # "Generating" until the gateway hangs up (the client has left), which the replica sees as EOF.
                if await replica.reader.read() == b"":
                    upstream_eof.set()
                return "close"
        writer.write(b"0\r\n\r\n")

    outcomes: list[bool] = []
    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()

        async def app(scope, receive, send):
            upstream = await pool.request(replica.url, "POST", scope["path"], [], b"{}")

            def done(complete: bool) -> None:
                outcomes.append(complete)
                upstream.release() if complete else upstream.close()

            await UpstreamRelay(upstream, done)(scope, receive, send)

        server, url, task = await _serve(app)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(url + "/fast", content=b"{}")
                assert response.status_code == 200 and response.content == b"".join(SSE)
                assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
                async with client.stream("POST", url + "/slow", content=b"{}") as stream:
                    async for _ in stream.aiter_bytes():
                        break
            # The client is gone: the relay closes its upstream connection, which the replica sees as EOF.
            await asyncio.wait_for(upstream_eof.wait(), 5)
            assert replica.connections == 1  # /slow reused the connection /fast returned to the pool
            for _ in range(100):
                if len(outcomes) == 2:
                    break
                await asyncio.sleep(0.02)
            assert outcomes == [True, False]
        finally:
            server.should_exit = True
            await task
            await pool.close()


async def _pieces(*pieces: bytes, fail: BaseException | None = None):
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece
    if fail is not None:
        raise fail


async def test_a_streamed_body_reaches_the_replica_whole_sized_or_chunked_on_a_fresh_connection():
    async def script(writer, head, nth):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with ScriptedReplica(script) as replica:
        pool = UpstreamPool()
        assert (await collect(pool, replica.url, target="small"))[1] == b"ok"  # leaves a pooled connection
        parts = [b"a" * 70_000, b"b" * 5, b"c" * 100_000]
        for length in (sum(map(len, parts)) + 3, None):
            response = await pool.request(replica.url, "POST", "upload", [], b"xyz", rest=_pieces(*parts),
                                          length=length)
            assert response.status == 200
            await response.stream_to(lambda _: None)
            response.release()
        (sized_head, sized), (chunked_head, streamed) = replica.requests[1:]
        assert sized == streamed == b"xyz" + b"".join(parts)
        assert b"content-length: %d" % len(sized) in sized_head and b"transfer-encoding" not in sized_head
        assert b"transfer-encoding: chunked" in chunked_head and b"content-length" not in chunked_head
        # Neither upload went into the pooled connection (one the replica may have closed while idle would take
        # part of the body with it); the first upload's connection was pooled and reused by the second.
        assert replica.connections == 3
        await pool.close()


async def _serve_raw(handle) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_streamed_body_is_sent_once():
    # The replica reads part of the body and hangs up without answering: not retryable (UpstreamConnectError would
    # be retried by the gateway, with a body that is gone), and sent on one connection only.
    connections: list[bytes] = []

    async def hang_up_mid_body(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        connections.append(await reader.read(10))
        writer.close()

    async def endless():
        while True:
            await asyncio.sleep(0)
            yield b"z" * 65536

    server, url = await _serve_raw(hang_up_mid_body)
    pool = UpstreamPool()
    with pytest.raises(UpstreamError) as info:
        await pool.request(url, "POST", "upload", [], b"x" * 1000, rest=endless(), length=None)
    assert not isinstance(info.value, UpstreamConnectError)
    assert len(connections) == 1 and connections[0]
    server.close()

    # The body's source fails (over the limit, client gone) before the replica answers: that error is raised, and
    # the replica sees the connection close with half a request.
    class Refused(Exception):
        pass

    async def answer(writer, head, nth):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with ScriptedReplica(answer) as replica:
        with pytest.raises(Refused):
            await pool.request(replica.url, "POST", "upload", [], b"x" * 10, rest=_pieces(b"y" * 10, fail=Refused()),
                               length=None)
        assert replica.requests == []  # it never saw a whole request
    await pool.close()


async def test_a_streamed_body_waits_while_the_replica_does_not_read():
    reading = asyncio.Event()
    received = bytearray()

    async def slow_reader(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reading.wait()
        received.extend(await read_chunked(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, url = await _serve_raw(slow_reader)
    consumed = 0
    total = 32 * 1024 * 1024

    async def source():  # never yields to the loop by itself: only the pump's waiting for the replica can stop it
        nonlocal consumed
        piece = b"p" * 65536
        while consumed < total:
            consumed += len(piece)
            yield piece

    pool = UpstreamPool()
    request = asyncio.ensure_future(pool.request(url, "POST", "upload", [], b"", rest=source(), length=None))
    seen, still = -1, 0
    while still < 20:  # until the source has not been read for 20 turns of 10 ms
        await asyncio.sleep(0.01)
        seen, still = consumed, (still + 1 if consumed == seen else 0)
    # Backpressure: what was read is what the socket buffers hold, not the whole body.
    assert 0 < consumed < total // 4, consumed
    reading.set()
    response = await request
    assert response.status == 200 and len(received) == total
    response.close()
    server.close()
    await pool.close()


def test_the_replica_path_keeps_the_client_encoding():
    from controlplane.gateway import _replica_path

    assert _replica_path({"raw_path": b"/endpoints/ns/name/v1/files/a%20b%2Fc", "path": "/endpoints/ns/name/v1/files/a b/c"}) \
        == "v1/files/a%20b%2Fc"
    assert _replica_path({"raw_path": b"/endpoints/ns/name", "path": "/endpoints/ns/name"}) == ""
    assert _replica_path({"raw_path": b"/endpoints/ns/name/", "path": "/endpoints/ns/name/"}) == ""
    assert _replica_path({"path": "/endpoints/ns/name/v1/a b"}) == "v1/a%20b"  # a server without raw_path
