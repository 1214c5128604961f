"""What the gateway knows about an endpoint, cached briefly, and how it picks a replica.

The gateway sits on the hot path of every token stream, so it reads the endpoint row at most every `TTL` seconds per
endpoint (all waiting requests share one refresh) and balances on in-process counters: least outstanding requests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from common.models import Endpoint

TTL = 0.5
MAX_ENTRIES = 10_000
"""Views kept at most (absent endpoints included, so a flood of random names costs one read per name and TTL, not
one per request): the cache starts over when full rather than growing with whatever names clients make up."""


@dataclass(frozen=True)
class EndpointView:
    id: int
    namespace: str
    name: str
    type: str
    desired_state: str
    state: str
    message: str | None
    targets: tuple[str, ...]  # base URLs of ready replicas (or the provider's service URL)
    fetched_at: float = field(default_factory=time.monotonic)


def _load(factory: sessionmaker[Session], namespace: str, name: str) -> EndpointView | None:
    # Only the columns routing needs: the write-only secret columns are never read (nor decrypted) on this path.
    columns = (Endpoint.id, Endpoint.namespace, Endpoint.name, Endpoint.type, Endpoint.desired_state, Endpoint.state,
               Endpoint.message, Endpoint.observed, Endpoint.ready_replicas)
    with factory() as session:
        endpoint = session.execute(
            select(*columns).where(Endpoint.namespace == namespace, Endpoint.name == name)
        ).one_or_none()
        if endpoint is None:
            return None
        observed = endpoint.observed
        targets = observed.ready_urls()
        if not targets and observed.service_url and endpoint.ready_replicas > 0:
            targets = [observed.service_url]
        return EndpointView(id=endpoint.id, namespace=endpoint.namespace, name=endpoint.name, type=endpoint.type,
                            desired_state=endpoint.desired_state, state=endpoint.state, message=endpoint.message,
                            targets=tuple(targets))


class EndpointDirectory:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self._cache: dict[tuple[str, str], EndpointView | None] = {}
        self._fetched: dict[tuple[str, str], float] = {}
        self._inflight_refresh: dict[tuple[str, str], asyncio.Future] = {}
        self.outstanding: dict[str, int] = {}  # replica URL -> requests in flight through this gateway
        self._bad: dict[str, float] = {}  # replica URL -> until when to avoid it (connection refused)

    async def get(self, namespace: str, name: str, *, max_age: float = TTL) -> EndpointView | None:
        key = (namespace, name)
        fetched = self._fetched.get(key)
        if fetched is not None and time.monotonic() - fetched < max_age:
            return self._cache[key]
        pending = self._inflight_refresh.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight_refresh[key] = future
        try:
            view = await run_in_threadpool(_load, self.factory, namespace, name)
            if len(self._cache) >= MAX_ENTRIES and key not in self._cache:
                self._cache.clear()
                self._fetched.clear()
            self._cache[key] = view
            self._fetched[key] = time.monotonic()
            future.set_result(view)
            return view
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight_refresh[key]

    def invalidate(self, namespace: str, name: str) -> None:
        self._fetched.pop((namespace, name), None)

    def pick(self, view: EndpointView) -> str | None:
        now = time.monotonic()
        candidates = [t for t in view.targets if self._bad.get(t, 0) < now] or list(view.targets)
        if not candidates:
            return None
        return min(candidates, key=lambda t: self.outstanding.get(t, 0))

    def mark_bad(self, target: str, seconds: float = 2.0) -> None:
        self._bad[target] = time.monotonic() + seconds
