"""API tokens and namespaces: minting (plain value shown once), listing without secrets, revoking.

The admin may mint a token for any user namespace (creating it, and any organisations named in `orgs`, with
memberships); any other token may mint more tokens for its own namespace only. A revoke returns only when no process
can still accept the token (controlplane/auth.py explains the wait).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.config import Settings, get_settings
from common.errors import Conflict, Forbidden, InvalidSpec, NotFound
from common.models import ApiToken, Membership, Namespace, NamespaceKind, utcnow
from controlplane.auth import Principal, display_prefix, hash_token, new_token, outlast_token_caches
from controlplane.services.validation import check_namespace


@dataclass
class TokenService:
    session: Session
    principal: Principal
    settings: Settings | None = None  # whose token_cache_seconds a revoke outlasts; None: the environment's

    def mint(self, *, namespace: str | None, name: str, orgs: Sequence[str] | None) -> tuple[ApiToken, str]:
        namespace = namespace or self.principal.name
        check_namespace(namespace)
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidSpec("token name must be 1 to 128 printable characters", param="name")
        if not self.principal.is_admin:
            if namespace != self.principal.name:
                raise Forbidden(f"a token may only mint tokens for its own namespace {self.principal.name!r}")
            if orgs:
                raise Forbidden("only the admin token may add organisation memberships")
        for org in orgs or ():
            check_namespace(org)
            if org == namespace:
                raise InvalidSpec("a user cannot be a member of itself", param="orgs")
        for attempt in range(3):
            try:
                user = self._namespace(namespace, NamespaceKind.USER)
                for org in orgs or ():
                    org_ns = self._namespace(org, NamespaceKind.ORG)
                    exists = self.session.scalar(select(Membership).where(Membership.user_id == user.id,
                                                                          Membership.org_id == org_ns.id))
                    if exists is None:
                        self.session.add(Membership(user_id=user.id, org_id=org_ns.id))
                        self.session.flush()
                raw = new_token()
                token = ApiToken(namespace_id=user.id, name=name, token_hash=hash_token(raw),
                                 prefix=display_prefix(raw), created_by=self.principal.name)
                self.session.add(token)
                self.session.commit()
                return token, raw
            except IntegrityError:
                # Another request created the same namespace or membership at the same moment: try again.
                self.session.rollback()
                if attempt == 2:
                    raise Conflict("concurrent token creation for this namespace; retry") from None
        raise AssertionError("unreachable")

    def list(self) -> Sequence[ApiToken]:
        query = select(ApiToken).order_by(ApiToken.id)
        if not self.principal.is_admin:
            query = query.join(Namespace, ApiToken.namespace_id == Namespace.id).where(
                Namespace.name == self.principal.name)
        return self.session.scalars(query).all()

    def revoke(self, token_id: int) -> ApiToken:
        token = self.session.get(ApiToken, token_id)
        if token is None or (not self.principal.is_admin and token.namespace.name != self.principal.name):
            raise NotFound(f"token {token_id} not found")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            self.session.commit()
        # Also when it was revoked already: a concurrent revoke may have committed a moment ago and still be waiting.
        outlast_token_caches(self.settings or get_settings())
        return token

    def _namespace(self, name: str, kind: NamespaceKind) -> Namespace:
        ns = self.session.scalar(select(Namespace).where(Namespace.name == name))
        if ns is None:
            ns = Namespace(name=name, kind=kind.value)
            self.session.add(ns)
            self.session.flush()
        elif ns.kind != kind.value:
            raise InvalidSpec(f"namespace {name!r} is an {'organisation' if ns.kind == 'org' else 'user'}, "
                              f"not {'an organisation' if kind is NamespaceKind.ORG else 'a user'}")
        return ns
