"""Request-scoped dependencies: the settings, a database session and the authenticated principal.

Authentication and the session are one dependency so a request pays a single thread-pool hop for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from controlplane.auth import Principal, authenticate_token
from controlplane.catalog import Catalog
from controlplane.core.config import Settings
from controlplane.errors import NotAuthenticated
from controlplane.services.endpoints import EndpointService
from controlplane.services.enqueue import Enqueue

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`: an `epc_` token minted by "
                    "POST /api/tokens, or the bootstrap admin token (ENDPOINTCTL_ADMIN_TOKEN).")


@dataclass
class Context:
    settings: Settings
    session: Session
    principal: Principal
    catalog: Catalog
    enqueue: Enqueue

    def endpoints(self) -> EndpointService:
        return EndpointService(self.session, self.principal, self.catalog, self.enqueue)


def get_context(request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Iterator[Context]:
    state = request.app.state
    session: Session = state.sessions()
    try:
        raw = credentials.credentials if credentials is not None else None
        if not raw:
            raise NotAuthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        principal = authenticate_token(session, raw, settings=state.settings)
        if principal is None:
            raise NotAuthenticated("invalid or revoked token")
        yield Context(settings=state.settings, session=session, principal=principal, catalog=state.catalog,
                      enqueue=state.enqueue)
    finally:
        session.close()


ContextDep = Annotated[Context, Depends(get_context)]
