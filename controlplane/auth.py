"""Bearer-token authentication and namespace authorization, shared by the API and the gateway.

Tokens look like `epc_<43 url-safe chars>`; only their SHA-256 is stored. The bootstrap admin token comes from
`ENDPOINTCTL_ADMIN_TOKEN` and is never stored. A principal may act on its own user namespace and on the
organisations it is a member of; the admin may act on every namespace. Anything else is answered with the 404 of a
namespace that does not exist, so a token learns nothing about other namespaces. `ENDPOINTCTL_METRICS_TOKEN`, when
set, is a scrape token: it reads `/metrics` and is unknown everywhere else.

One cache, in every process, serves the API routes and the gateway alike: without it the hot path would pay a
thread hop and two queries per request. Revocation is nevertheless immediate on every process, however many API
replicas run, without any process telling another: an entry lives `ENDPOINTCTL_TOKEN_CACHE_SECONDS` counted from
*before* the database read that produced it, so a read that could still find the token valid began before the
revocation committed, and its entry is gone one TTL after that commit; the revoke call returns only once that TTL has
passed (`outlast_token_caches`). Notifying the other processes instead (Redis pub/sub, a revocation counter) would
add a moving part that can lag or drop a message, and a counter checked per request costs the query the cache saves.
Every process must share the setting (Helm and `endpointctl up` give them one environment).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from common.config import Settings, get_settings
from common.models import ApiToken, Membership, Namespace, utcnow

TOKEN_PREFIX = "epc_"
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


class _Miss:
    """`authenticate_without_database` could not decide: the database must be asked."""


MISS = _Miss()


class TokenCache:
    """Token digest → principal (or None: unknown or revoked), each entry expiring one TTL after the database read
    that produced it *began*; and the lookups in flight, so that concurrent misses for one token share a single
    thread hop (a burst of 32 new streams would otherwise queue 32 hops in front of their first token)."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Principal | None]] = {}
        self._pending: dict[str, tuple[float, asyncio.Future]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None | _Miss:
        item = self._items.get(digest)
        if item is None or item[0] <= time.monotonic():
            return MISS
        return item[1]

    def put(self, digest: str, principal: Principal | None, *, read_started: float, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._items) >= self.MAX_ENTRIES:
                self._items.clear()
            self._items[digest] = (read_started + ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    async def coalesce(self, digest: str, lookup: Callable[[], object], ttl: float) -> Principal | None:
        """Run `lookup` (blocking: it goes to the thread pool), or join one for the same token that began less than
        a TTL ago: joining an older one could hand out an answer read before a revocation that has since
        returned."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = self._pending.get(digest)
        if pending is not None and now - pending[0] < ttl and pending[1].get_loop() is loop:
            return await asyncio.shield(pending[1])
        future = loop.create_future()
        self._pending[digest] = (now, future)
        try:
            principal = await run_in_threadpool(lookup)
            future.set_result(principal)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # joined waiters re-raise it; nobody else must see "exception never retrieved"
            raise
        finally:
            if self._pending.get(digest, (0.0, None))[1] is future:
                del self._pending[digest]
        return principal  # type: ignore[return-value]


_cache = TokenCache()


def invalidate_cache() -> None:
    """Forget this process's cached authentications (tests that reuse one process for several databases)."""
    _cache.clear()


def outlast_token_caches(settings: Settings) -> None:
    """Block until no process can still trust a token revoked (committed) before this call: every cache entry that
    predates the commit expires within one TTL of it."""
    if settings.token_cache_seconds > 0:
        time.sleep(settings.token_cache_seconds)


def org_names(session: Session, user_id: int) -> tuple[str, ...]:
    rows = session.scalars(
        select(Namespace.name).join(Membership, Membership.org_id == Namespace.id)
        .where(Membership.user_id == user_id).order_by(Namespace.name))
    return tuple(rows)


def _bytes(value: str) -> bytes:
    """Header values arrive decoded as latin-1 and may hold any byte; compare them as bytes, never as str."""
    return value.encode("utf-8", "surrogatepass")


def is_metrics_token(raw_token: str | None, settings: Settings) -> bool:
    """The scrape token (constant-time), which reads `/metrics` and nothing else."""
    return bool(raw_token and settings.metrics_token) and hmac.compare_digest(
        _bytes(raw_token), _bytes(settings.metrics_token or ""))


def authenticate_without_database(raw_token: str | None, settings: Settings) -> Principal | None | _Miss:
    """The admin token, a cached token, or an obviously invalid one, decided without I/O (safe on an event loop);
    `MISS` when only the database can tell."""
    if not raw_token:
        return None
    if settings.admin_token and hmac.compare_digest(_bytes(raw_token), _bytes(settings.admin_token)):
        return Principal(name=settings.admin_namespace, is_admin=True)
    if not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 256:
        return None
    return _cache.get(hash_token(raw_token))


def authenticate_token(session: Session, raw_token: str | None, *, settings: Settings | None = None) -> Principal | None:
    """The principal a bearer token stands for, or None when it is unknown or revoked.

    Call it at the start of a unit of work, on a session that has not read yet (its read must not be older than
    the clock taken here): when it records the token's `last_used_at` (at most every five minutes per token) it
    commits `session`.
    """
    settings = settings or get_settings()
    quick = authenticate_without_database(raw_token, settings)
    if quick is not MISS:
        return quick  # type: ignore[return-value]
    assert raw_token is not None
    digest = hash_token(raw_token)
    read_started = time.monotonic()  # before the read: see the module docstring
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)))
    if token is None:
        _cache.put(digest, None, read_started=read_started, ttl=settings.token_cache_seconds)
        return None
    principal = Principal(name=token.namespace.name, orgs=org_names(session, token.namespace_id), token_id=token.id)
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.commit()
    _cache.put(digest, principal, read_started=read_started, ttl=settings.token_cache_seconds)
    return principal


async def authenticate_request(raw_token: str | None, settings: Settings,
                               lookup: Callable[[str], Principal | None]) -> Principal | None:
    """What the API and the gateway call per request: no I/O for the admin token, a cached or an obviously invalid
    token; otherwise `lookup(raw_token)` (a blocking call that runs `authenticate_token` on a fresh session) in the
    thread pool, shared with concurrent requests for the same token."""
    quick = authenticate_without_database(raw_token, settings)
    if quick is not MISS:
        return quick  # type: ignore[return-value]
    assert raw_token is not None
    return await _cache.coalesce(hash_token(raw_token), lambda: lookup(raw_token), settings.token_cache_seconds)


# -- Dashboard sessions ----------------------------------------------------------------------------------------
# The dashboard signs in with a token like any client, and the browser keeps it in a cookie the page's scripts cannot
# read: Fernet-sealed with the secrets key (common/crypto.py), so the cookie is useless outside this control plane and
# cannot be forged or stretched past its age. The token inside is authenticated on every request exactly like a bearer
# token, so a revoke ends the session the moment the revoke returns. A cookie travels with requests a foreign page
# makes, so unsafe methods also need `X-CSRF-Token`: an HMAC of the cookie keyed by the token it holds, which only a
# page that may read `GET /api/session` (same origin: SameSite=Strict and CORS keep others out) can learn.

SESSION_COOKIE = "endpointctl_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_COOKIE = 2048


class CsrfRejected(Exception):
    """A cookie-authenticated unsafe request without the matching `X-CSRF-Token` header."""


_keyrings: dict[int, tuple[Settings, object]] = {}


def _keyring(settings: Settings):
    from common.crypto import keyring_for

    cached = _keyrings.get(id(settings))
    if cached is None or cached[0] is not settings:
        if len(_keyrings) >= 64:  # one per Settings object: a process has one, a test run a few dozen
            _keyrings.clear()
        cached = _keyrings[id(settings)] = (settings, keyring_for(settings))
    return cached[1]


def seal_session(settings: Settings, raw_token: str, *, issued_at: float | None = None) -> str:
    """The cookie value for a signed-in token (url-safe base64: no cookie quoting needed)."""
    from common.crypto import PREFIX

    sealed = _keyring(settings).encrypt({"token": raw_token, "iat": time.time() if issued_at is None else issued_at})
    return sealed[len(PREFIX):]


def open_session(settings: Settings, value: str | None) -> str | None:
    """The token a session cookie holds, or None when it is absent, not ours, tampered with or older than
    `session_max_age_seconds`."""
    from common.crypto import PREFIX, SecretsKeyError

    if not value or len(value) > _MAX_COOKIE or not value.isascii() or not value.isprintable():
        return None
    try:
        data = _keyring(settings).decrypt(PREFIX + value)
    except (SecretsKeyError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not isinstance(
            data.get("iat"), (int, float)):
        return None
    age = time.time() - data["iat"]
    if age < -60 or age > settings.session_max_age_seconds:
        return None
    return data["token"]


def csrf_token(raw_token: str, cookie_value: str) -> str:
    key = hashlib.sha256(b"endpointctl-csrf\0" + _bytes(raw_token)).digest()
    return hmac.new(key, cookie_value.encode("ascii"), hashlib.sha256).hexdigest()


def token_from_session(settings: Settings, cookie_value: str | None, *, method: str,
                       csrf_header: str | None) -> str | None:
    """The token of the session cookie (None: no valid session); raises `CsrfRejected` for an unsafe method whose
    `X-CSRF-Token` does not match."""
    raw = open_session(settings, cookie_value)
    if raw is None:
        return None
    if method.upper() not in SAFE_METHODS:
        assert cookie_value is not None
        if not csrf_header or not hmac.compare_digest(_bytes(csrf_header), _bytes(csrf_token(raw, cookie_value))):
            raise CsrfRejected(f"a signed-in browser request with {method.upper()} needs the {CSRF_HEADER} header "
                               f"that GET /api/session returns")
    return raw


def without_session_cookie(cookie_header: bytes) -> bytes:
    """A `Cookie` header less the session cookie: the gateway must not hand a caller's session to a replica (which
    may run a tenant's own image)."""
    kept = [part for part in cookie_header.split(b";")
            if part.strip() and not part.strip().startswith(SESSION_COOKIE.encode() + b"=")]
    return b";".join(kept).strip()
