"""Which namespaces exist and which a token sees; the admin creates them explicitly.

A namespace exists once a row in `namespaces` names it — minting a token for a user creates that user's row (and
its organisations'), `POST /api/namespaces` creates one without a token — and the admin's own namespace always
exists. Namespaces that only hold endpoints (created before namespaces had to exist) still count, so an upgrade
loses nothing. Before this, the admin creating an endpoint in a mistyped namespace silently made a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import Conflict, Forbidden, NotFound
from common.models import Endpoint, Namespace, NamespaceKind
from controlplane.auth import Principal
from controlplane.services.validation import check_namespace


@dataclass
class NamespaceService:
    session: Session
    principal: Principal

    def visible(self) -> list[tuple[str, str]]:
        """(name, kind) of every namespace this token may act in, sorted by name."""
        if not self.principal.is_admin:
            return [(self.principal.name, NamespaceKind.USER.value),
                    *((org, NamespaceKind.ORG.value) for org in self.principal.orgs)]
        found = {name: kind for name, kind in self.session.execute(select(Namespace.name, Namespace.kind))}
        for (name,) in self.session.execute(select(Endpoint.namespace).distinct()):
            found.setdefault(name, NamespaceKind.USER.value)
        found.setdefault(self.principal.name, NamespaceKind.USER.value)
        return sorted(found.items())

    def exists(self, name: str) -> bool:
        if name == self.principal.name and self.principal.is_admin:
            return True
        if self.session.scalar(select(Namespace.id).where(Namespace.name == name)) is not None:
            return True
        return self.session.scalar(select(Endpoint.id).where(Endpoint.namespace == name).limit(1)) is not None

    def require(self, name: str) -> None:
        """Raise NotFound for a namespace nobody created (only the admin can get this far for one)."""
        if not self.exists(name):
            raise NotFound(f"namespace {name!r} does not exist; an admin creates it with "
                           f"`endpointctl namespace create {name}` (POST /api/namespaces) or by minting a token for it")

    def create(self, name: str, kind: NamespaceKind) -> Namespace:
        if not self.principal.is_admin:
            raise Forbidden("only the admin token may create namespaces")
        check_namespace(name)
        if self.exists(name):
            raise Conflict(f"namespace {name!r} already exists")
        row = Namespace(name=name, kind=kind.value)
        self.session.add(row)
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            raise Conflict(f"namespace {name!r} already exists") from None
        return row
