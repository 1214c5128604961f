"""Headers for every dashboard response (`/` and `/ui/...`): a CSP that allows only our own scripts, styles, images
and API calls, so an escaping mistake cannot run injected code; no framing, no MIME sniffing, no referrer (a page
URL names namespaces and endpoints). The API and `/docs` keep their own headers: Swagger's page needs a CDN."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag): an upgrade never leaves an old module in a browser
]
_NAMES = {name for name, _ in HEADERS}


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path == "/ui" or path.startswith("/ui/")


class DashboardHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": headers + HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)
