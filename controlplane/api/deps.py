"""Request-scoped dependencies: the settings, a database session and the authenticated principal.

Authentication runs in the dependency (so 401 precedes body validation); the session belongs to the route's
thread. Routes use `with ctx:` so the session is closed where it was used. `MetricsReader` guards `/metrics`: it
names every tenant's namespaces and endpoints, so only the admin and the scrape token read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from common.catalog import Catalog
from common.config import Settings
from common.model_catalog import ModelCatalog
from common.errors import Forbidden, NotAuthenticated
from controlplane.auth import (CSRF_HEADER, SESSION_COOKIE, CsrfRejected, Principal, authenticate_request,
                               authenticate_token, is_metrics_token, token_from_session)
from controlplane.services.catalog import CatalogService
from controlplane.services.endpoints import EndpointService
from controlplane.services.enqueue import Enqueue
from controlplane.services.quota import Quota
from controlplane.services.validation import SpecLimits

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`: an `epc_` token minted by "
                    "POST /api/tokens, or the bootstrap admin token (ENDPOINTCTL_ADMIN_TOKEN).")


class Context:
    """What a route needs. The session opens on first use, in the route's worker thread, and `with ctx:` closes
    it there too, so a request costs one thread-pool hop and the event loop never waits on the database."""

    def __init__(self, state: Any, principal: Principal) -> None:
        self.settings: Settings = state.settings
        self.catalog: Catalog = state.catalog
        self.model_catalog: ModelCatalog = state.model_catalog
        self.enqueue: Enqueue = state.enqueue
        self.principal = principal
        self._sessions: sessionmaker[Session] = state.sessions
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    def endpoints(self) -> EndpointService:
        return EndpointService(self.session, self.principal, self.catalog, self.enqueue,
                               SpecLimits.from_settings(self.settings), Quota.from_settings(self.settings))

    def catalog_service(self) -> CatalogService:
        return CatalogService(self.settings, self.model_catalog, self.catalog, self.endpoints)

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _authenticate_with_database(state: Any, raw: str) -> Principal | None:
    with state.sessions() as session:
        return authenticate_token(session, raw, settings=state.settings)


def _bearer_value(credentials: HTTPAuthorizationCredentials | None) -> str:
    raw = credentials.credentials if credentials is not None else None
    if not raw:
        raise NotAuthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    return raw


def request_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The bearer token, else the dashboard's session cookie (controlplane/auth.py); a bearer wins, since a header a
    foreign page cannot set is not open to CSRF."""
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        return _bearer_value(None)
    try:
        raw = token_from_session(request.app.state.settings, cookie, method=request.method,
                                 csrf_header=request.headers.get(CSRF_HEADER))
    except CsrfRejected as exc:
        raise Forbidden(str(exc)) from None
    if raw is None:
        raise NotAuthenticated("the dashboard session has expired or is not valid: sign in again")
    return raw


async def _principal(state: Any, raw: str) -> Principal:
    principal = await authenticate_request(raw, state.settings, lambda token: _authenticate_with_database(state, token))
    if principal is None:
        raise NotAuthenticated("invalid or revoked token")
    return principal


async def get_context(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                      ) -> AsyncIterator[Context]:
    """Authenticate before the body is looked at (401 comes before 422): the admin token and cached tokens need
    no I/O; other tokens cost one thread-pool hop."""
    state = request.app.state
    principal = await _principal(state, request_token(request, credentials))
    ctx = Context(state, principal)
    try:
        yield ctx
    finally:
        if ctx._session is not None:  # a route that did not close its session (an exception on the way out)
            await run_in_threadpool(ctx.close)


ContextDep = Annotated[Context, Depends(get_context)]


async def require_metrics_reader(request: Request,
                                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """The scrape token (`ENDPOINTCTL_METRICS_TOKEN`) or the admin; any tenant token is 403."""
    state = request.app.state
    raw = _bearer_value(credentials)
    if is_metrics_token(raw, state.settings):
        return
    if not (await _principal(state, raw)).is_admin:
        raise Forbidden("/metrics needs the admin token or the scrape token (ENDPOINTCTL_METRICS_TOKEN)")


MetricsReader = Depends(require_metrics_reader)
