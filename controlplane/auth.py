"""Bearer-token authentication and namespace authorization, shared by the API and the gateway.

Tokens look like `epc_<43 url-safe chars>`; only their SHA-256 is stored. The bootstrap admin token comes from
`ENDPOINTCTL_ADMIN_TOKEN` and is never stored. A principal may act on its own user namespace and on the
organisations it is a member of; the admin may act on every namespace. Anything else is answered with the 404 of a
namespace that does not exist, so a token learns nothing about other namespaces.

Authentications are cached in-process for a few seconds (the hot GET path would otherwise pay two queries per
request); revoking a token clears this process's cache at once and other processes within `CACHE_TTL` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.core.config import Settings, get_settings
from controlplane.models import ApiToken, Membership, Namespace, utcnow

TOKEN_PREFIX = "epc_"
CACHE_TTL = 5.0
_LAST_USED_RESOLUTION = timedelta(minutes=5)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user namespace, its organisations, and whether it is the bootstrap admin."""

    name: str
    orgs: tuple[str, ...] = ()
    is_admin: bool = False
    token_id: int | None = None

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.name, *self.orgs)

    def can_access(self, namespace: str) -> bool:
        return self.is_admin or namespace in self.namespaces


def hash_token(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def display_prefix(raw_token: str) -> str:
    return raw_token[: len(TOKEN_PREFIX) + 6]


class _Cache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (time.monotonic() + CACHE_TTL, principal)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache = _Cache()


def invalidate_cache() -> None:
    """Forget cached authentications (called when a token is revoked)."""
    _cache.clear()


def org_names(session: Session, user_id: int) -> tuple[str, ...]:
    rows = session.scalars(
        select(Namespace.name).join(Membership, Membership.org_id == Namespace.id)
        .where(Membership.user_id == user_id).order_by(Namespace.name))
    return tuple(rows)


class _Miss:
    """`authenticate_without_database` could not decide: the database must be asked."""


MISS = _Miss()


def authenticate_without_database(raw_token: str | None, settings: Settings) -> Principal | None | _Miss:
    """The admin token, a cached token, or an obviously invalid one, decided without I/O (safe on an event loop);
    `MISS` when only the database can tell."""
    if not raw_token:
        return None
    if settings.admin_token and hmac.compare_digest(raw_token.encode("utf-8", "surrogatepass"),
                                                    settings.admin_token.encode()):
        return Principal(name=settings.admin_namespace, is_admin=True)
    if not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 256:
        return None
    cached = _cache.get(hash_token(raw_token))
    return cached if cached is not None else MISS


def authenticate_token(session: Session, raw_token: str | None, *, settings: Settings | None = None) -> Principal | None:
    """The principal a bearer token stands for, or None when it is unknown or revoked.

    Call it at the start of a unit of work: when it records the token's `last_used_at` (at most every five
    minutes per token) it commits `session`.
    """
    quick = authenticate_without_database(raw_token, settings or get_settings())
    if quick is not MISS:
        return quick  # type: ignore[return-value]
    assert raw_token is not None
    digest = hash_token(raw_token)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))
    if token is None:
        return None
    principal = Principal(name=token.namespace.name, orgs=org_names(session, token.namespace_id), token_id=token.id)
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.commit()
    _cache.put(digest, principal)
    return principal
