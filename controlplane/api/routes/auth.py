"""`/api/whoami-v2` (huggingface_hub resolves the default namespace with it), `/api/tokens` and `/api/namespaces`.

Authorization model: a token acts as one user namespace plus that user's organisations; the bootstrap admin
token acts on every namespace. Requests for any other namespace answer **404**, whether it exists or not.
The admin mints tokens for any user (creating the user and the organisations in `orgs`); every other token
may mint tokens for its own namespace and list or revoke its own tokens. Namespaces are created by the admin, explicitly
(`POST /api/namespaces`) or by minting a token for a user; `GET /api/namespaces` lists those a token can act in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from controlplane.api.responses import FastJSONResponse

from common.models import ApiToken, NamespaceKind
from controlplane.api.deps import Context, ContextDep
from controlplane.schemas import (ErrorBody, NamespaceCreate, NamespacePublic, NamespacesPublic, TokenCreate, TokenCreated,
                                  TokensPublic, WhoAmI, iso_z)
from controlplane.services.namespaces import NamespaceService
from controlplane.services.tokens import TokenService

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422)}
router = APIRouter(prefix="/api", tags=["auth"], responses=ERRORS)


def _tokens(ctx: Context) -> TokenService:
    return TokenService(ctx.session, ctx.principal, ctx.settings)


def _token(token: ApiToken) -> dict:
    return {"id": token.id, "name": token.name, "namespace": token.namespace.name, "prefix": token.prefix,
            "createdAt": iso_z(token.created_at), "lastUsedAt": iso_z(token.last_used_at),
            "revoked": token.revoked_at is not None}


@router.get("/whoami-v2", responses={200: {"model": WhoAmI}}, summary="Who the bearer token is")
def read_whoami(ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        p = ctx.principal
        return FastJSONResponse({"type": "user", "name": p.name, "orgs": [{"name": o} for o in p.orgs],
                               "auth": {"type": "access_token", "accessToken": {"role": "admin" if p.is_admin else "write"}},
                               "isAdmin": p.is_admin})


@router.post("/tokens", status_code=201, responses={201: {"model": TokenCreated}},
             summary="Mint a token (the plain value is in this response only)")
def create_token(body: TokenCreate, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        token, raw = _tokens(ctx).mint(namespace=body.namespace, name=body.name, orgs=body.orgs)
        return FastJSONResponse({**_token(token), "token": raw}, status_code=201)


@router.get("/tokens", responses={200: {"model": TokensPublic}},
            summary="List tokens (own namespace; all for the admin); never the secret")
def read_tokens(ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return FastJSONResponse({"items": [_token(t) for t in _tokens(ctx).list()]})


@router.delete("/tokens/{token_id}", summary="Revoke a token (own tokens; any for the admin); no process accepts it "
               "once this returns")
def delete_token(token_id: Annotated[int, Path(ge=1, le=2**62)], ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        return FastJSONResponse(_token(_tokens(ctx).revoke(token_id)))


@router.get("/namespaces", responses={200: {"model": NamespacesPublic}},
            summary="Namespaces this token can act in (all of them for the admin)")
def read_namespaces(ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        visible = NamespaceService(ctx.session, ctx.principal).visible()
        return FastJSONResponse({"items": [{"name": name, "kind": kind} for name, kind in visible]})


@router.post("/namespaces", status_code=201, responses={201: {"model": NamespacePublic}},
             summary="Create a namespace (admin only); endpoints can be created only in namespaces that exist")
def create_namespace(body: NamespaceCreate, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        row = NamespaceService(ctx.session, ctx.principal).create(body.name, NamespaceKind(body.kind))
        return FastJSONResponse({"name": row.name, "kind": row.kind}, status_code=201)
