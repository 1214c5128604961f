"""`/api/session`: the dashboard's sign-in. A browser trades a token for an HttpOnly session cookie (sealed with the
secrets key; controlplane/auth.py) and reads back who it is and the CSRF token its unsafe requests must carry.

Sign-in is no login-CSRF hole: the body must be JSON (a foreign page's form or no-preflight fetch can send only
form encodings or text/plain) and an `Origin` header, when the browser sends one, must be this control plane's.
The token travels only in the body, never in a URL, and is never echoed back.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import Settings
from common.errors import Forbidden, InvalidSpec, NotAuthenticated
from controlplane.api.deps import Context, ContextDep, _authenticate_with_database
from controlplane.api.responses import FastJSONResponse
from controlplane.auth import (CSRF_HEADER, SESSION_COOKIE, CsrfRejected, Principal, authenticate_request,
                               csrf_token, seal_session, token_from_session)
from controlplane.schemas import ErrorBody
from controlplane.services.namespaces import NamespaceService

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 413, 415)}
router = APIRouter(prefix="/api", tags=["dashboard session"], responses=ERRORS)
MAX_BODY = 4096


class UnsupportedMediaType(InvalidSpec):
    status_code = 415


class BodyTooLarge(InvalidSpec):
    status_code = 413


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)


class SessionPublic(BaseModel):
    name: str
    namespaces: list[str]
    isAdmin: bool
    csrfToken: str | None = Field(description="send it as X-CSRF-Token with POST/PUT/PATCH/DELETE; null for a "
                                              "bearer-authenticated caller, which needs none")
    expiresAt: float | None = None


def _own_hosts(request: Request, settings: Settings) -> set[str]:
    """The hosts this control plane answers as. The scheme is not compared: behind a TLS-terminating proxy the
    request arrives as http while the page's origin is https, and a foreign page cannot choose the Host header."""
    hosts = {request.headers.get("host", "").lower()}
    if settings.public_url:
        hosts.add(urlsplit(settings.public_url).netloc.lower())
    return hosts - {""}


def _check_same_origin(request: Request, settings: Settings) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return
    parts = urlsplit(origin) if origin.isascii() else None
    if parts is None or parts.scheme not in ("http", "https") or parts.netloc.lower() not in _own_hosts(request, settings):
        raise Forbidden("sign-in is accepted only from this control plane's own pages")


async def _body(request: Request) -> SessionCreate:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType('send the token as JSON: Content-Type: application/json, {"token": "..."}',
                                   param="token")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BodyTooLarge(f"the sign-in body is larger than {MAX_BODY} bytes", param="token")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge(f"the sign-in body is larger than {MAX_BODY} bytes", param="token")
    try:
        return SessionCreate.model_validate_json(body)
    except ValidationError:
        raise InvalidSpec('the body must be {"token": "<1 to 256 characters>"} and nothing else',
                          param="token") from None


def _namespaces(ctx: Context) -> list[str]:
    """What the dashboard lists: the namespaces the token may act in (every one for the admin), as
    `GET /api/namespaces` answers; the token's own first."""
    names = [name for name, _kind in NamespaceService(ctx.session, ctx.principal).visible()]
    return [ctx.principal.name, *(n for n in names if n != ctx.principal.name)]


def _public(principal: Principal, namespaces: list[str], csrf: str | None, expires_at: float | None) -> dict:
    return {"name": principal.name, "namespaces": namespaces, "isAdmin": principal.is_admin, "csrfToken": csrf,
            "expiresAt": expires_at}


@router.post("/session", responses={200: {"model": SessionPublic}},
             summary="Sign in: trade a token (JSON body) for the dashboard's HttpOnly session cookie")
async def create_session(request: Request) -> Response:
    state = request.app.state
    settings: Settings = state.settings
    _check_same_origin(request, settings)
    body = await _body(request)
    principal = await authenticate_request(body.token, settings,
                                           lambda token: _authenticate_with_database(state, token))
    if principal is None:
        raise NotAuthenticated("invalid or revoked token")
    issued_at = time.time()
    cookie = seal_session(settings, body.token, issued_at=issued_at)
    secure = settings.session_cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    ctx = Context(state, principal)
    with ctx:
        namespaces = _namespaces(ctx)
    response = FastJSONResponse(_public(principal, namespaces, csrf_token(body.token, cookie),
                                        issued_at + settings.session_max_age_seconds))
    response.set_cookie(SESSION_COOKIE, cookie, max_age=settings.session_max_age_seconds, path="/", secure=secure,
                        httponly=True, samesite="strict")
    return response


@router.get("/session", responses={200: {"model": SessionPublic}},
            summary="Who is signed in, the namespaces the dashboard shows, and the CSRF token")
def read_session(request: Request, ctx: ContextDep) -> FastJSONResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    bearer = request.headers.get("authorization")
    csrf = None
    if cookie is not None and not bearer:
        raw = token_from_session(ctx.settings, cookie, method="GET", csrf_header=None)
        csrf = csrf_token(raw, cookie) if raw is not None else None
    with ctx:
        return FastJSONResponse(_public(ctx.principal, _namespaces(ctx), csrf, None))


@router.delete("/session", status_code=204, summary="Sign out: the session cookie is cleared (idempotent)")
def delete_session(request: Request) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None:
        try:
            token_from_session(request.app.state.settings, cookie, method="DELETE",
                               csrf_header=request.headers.get(CSRF_HEADER))
        except CsrfRejected as exc:
            raise Forbidden(str(exc)) from None
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
