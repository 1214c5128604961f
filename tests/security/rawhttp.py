"""One HTTP/1.1 request over a plain socket, for the fuzz suites: headers and bodies go out byte for byte (httpx
would refuse many of them), and the response is read to the end (`Connection: close`), streams included."""

from __future__ import annotations

import socket


def raw_request(url: str, method: str, target: str, headers: dict[str, str], body: bytes | None, *,
                timeout: float = 30) -> tuple[int, bytes, bytes, bytes]:
    """(status, lower-cased head, content, whole response); a dropped connection or a non-HTTP answer fails here."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method.upper()} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items() if v]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + (body or b"")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.1 "), f"connection dropped or not HTTP: {response[:200]!r} for {target!r}"
    head, _, content = response.partition(b"\r\n\r\n")
    return int(response[9:12]), head.lower(), content, response
