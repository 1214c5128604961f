"""What the gateway knows about an endpoint, cached briefly, and how it picks a replica.

The gateway sits on the hot path of every token stream, so it reads the endpoint row at most every `TTL` seconds per
endpoint (all waiting requests share one refresh) and balances on in-process counters.

Which replica: requests that start alike go where that start was served before, because a replica whose prefix
cache holds a prompt's beginning prefills only the rest (a shared system prompt, a conversation that resends its
history). The gateway cannot tokenize (it does not load the model's tokenizer, and must not spend the CPU), so the
key is text: :func:`prefix_key` hashes the first `PREFIX_CHARS` characters of the system prompt and first user turn
of a chat request, or of a completion's prompt / TGI's `inputs`, parsed from the body the gateway holds anyway.
:func:`choose` is consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam): each key ranks the
replicas by rendezvous hash, and the request goes to the first in that order whose in-flight count is under
``ceil(load_factor × (in flight + 1) / replicas)``, so a prefix stays on its replica until that replica carries more
than its share ("sticky until saturated"), and a replica joining or leaving moves only the keys it gains or held.
A request without a key (not JSON, no prompt, a streamed upload) goes to the least-outstanding replica, as every
request did before.

When every replica holds `max_inflight` requests, :meth:`EndpointDirectory.acquire` queues the request (first in,
first out, at most `queue_size` per endpoint) until a replica frees a slot, and gives up with
:class:`ReplicasSaturated` after `queue_timeout` seconds: the gateway answers 503 with Retry-After instead of piling
onto a replica that would answer 429 or swap its KV cache out.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from common.models import Endpoint

TTL = 0.5
MAX_ENTRIES = 10_000
"""Views kept at most (absent endpoints included, so a flood of random names costs one read per name and TTL, not
one per request): the cache starts over when full rather than growing with whatever names clients make up."""
PREFIX_CHARS = 1024
"""Characters of a prompt's beginning that make its routing key: longer than a typical system prompt's shared
part is useless (what follows differs per request), shorter would put unrelated conversations with a common
opening on one replica. A system prompt longer than this keys on itself alone, so every question under it shares a
replica."""
MAX_KEY_BODY = 256 * 1024
"""Bodies larger than this are not parsed for a key (the gateway streams them anyway)."""
RECHECK_S = 0.5
"""A queued request looks again this often even without a release: replicas may have been added meanwhile."""
RECENT_KEYS = 4096
"""Keys remembered per replica to tell whether a request went where its prefix went before (the routing-quality
metric): about what a replica's prefix cache can hold of distinct starts, bounded whatever tenants send."""


class ReplicasSaturated(Exception):
    """Every replica held its in-flight cap for the whole queue timeout, or the queue itself was full."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RoutingPolicy:
    prefix_routing: bool = True
    load_factor: float = 1.5
    max_inflight: int = 128  # per replica; the bundled runtime's MAX_CONCURRENT_REQUESTS default
    queue_timeout: float = 30.0
    queue_size: int = 1024  # per endpoint


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


def _text(content: object) -> str:
    """A chat message's text: a string, or the text parts of a list of parts (images and audio are not keyed)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _prompt_start(payload: dict) -> tuple[str, str] | None:
    messages = payload.get("messages")
    if isinstance(messages, list):
        system: list[str] = []
        for message in messages:
            if not isinstance(message, dict):
                return None
            role = message.get("role")
            if role in ("system", "developer"):
                system.append(_text(message.get("content")))
            elif role == "user":
                return "chat", "\x1e".join(system) + "\x1f" + _text(message.get("content"))
            else:
                break
        return ("chat", "\x1e".join(system)) if system else None
    prompt = payload.get("prompt", payload.get("inputs"))
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch: keyed by its first prompt
    if isinstance(prompt, list):  # token ids
        return "ids", ",".join(str(i) for i in prompt[: PREFIX_CHARS // 4] if type(i) is int)
    if isinstance(prompt, str):
        return "text", prompt
    return None


def prefix_key(body: bytes) -> int | None:
    """The routing key of a request body, or None when it has none (not a JSON object, no prompt, too large).

    Never raises: the body is tenant input, and a body the gateway cannot read is the replica's to refuse."""
    if not body or len(body) > MAX_KEY_BODY or body.lstrip()[:1] != b"{":
        return None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), absurdly deep, an over-long integer
        return None
    if not isinstance(payload, dict):
        return None
    start = _prompt_start(payload)
    if start is None or not start[1].strip("\x1e\x1f"):
        return None
    kind, text = start
    data = f"{kind}\x00{text[:PREFIX_CHARS]}".encode("utf-8", "surrogatepass")  # JSON may carry lone surrogates
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _weight(key: int, target: str) -> int:
    return int.from_bytes(hashlib.blake2b(target.encode("utf-8", "surrogatepass"), digest_size=8,
                                          key=key.to_bytes(8, "big")).digest(), "big")


def rank(key: int, targets: Sequence[str]) -> list[str]:
    """Rendezvous order of the replicas for one key: the same on every gateway process, and removing a replica
    moves only the keys that ranked it first."""
    return sorted(targets, key=lambda t: _weight(key, t), reverse=True)


def choose(targets: Sequence[str], outstanding: Mapping[str, int], key: int | None, *, load_factor: float,
           max_inflight: int) -> str | None:
    """The replica for one request, or None when every replica holds `max_inflight` (the caller queues)."""
    load = {t: outstanding.get(t, 0) for t in targets}
    open_targets = [t for t in targets if load[t] < max_inflight]
    if not open_targets:
        return None
    if key is not None:
        bound = min(max_inflight, max(1, math.ceil(load_factor * (sum(load.values()) + 1) / len(targets))))
        for target in rank(key, targets):
            if load[target] < bound:
                return target
    return min(open_targets, key=load.__getitem__)


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
    def __init__(self, factory: sessionmaker[Session], policy: RoutingPolicy | None = None) -> None:
        self.factory = factory
        self.policy = policy or RoutingPolicy()
        self._cache: dict[tuple[str, str], EndpointView | None] = {}
        self._fetched: dict[tuple[str, str], float] = {}
        self._inflight_refresh: dict[tuple[str, str], asyncio.Future] = {}
        self.outstanding: dict[str, int] = {}  # replica URL -> requests in flight through this gateway
        self._bad: dict[str, float] = {}  # replica URL -> until when to avoid it (connection refused)
        self._queues: dict[int, collections.deque[asyncio.Future]] = {}  # endpoint id -> waiting requests
        self._endpoint_of: dict[str, int] = {}  # replica URL -> endpoint id, to wake that endpoint's queue
        self._recent: dict[str, collections.OrderedDict[int, None]] = {}  # replica URL -> keys it was sent lately

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

    def pick(self, view: EndpointView, key: int | None = None) -> str | None:
        """The replica for a request now, without waiting: None when the endpoint has no replica or every one is
        at its cap."""
        now = time.monotonic()
        candidates = [t for t in view.targets if self._bad.get(t, 0) < now] or list(view.targets)
        if not candidates:
            return None
        policy = self.policy
        return choose(candidates, self.outstanding, key if policy.prefix_routing else None,
                      load_factor=policy.load_factor, max_inflight=policy.max_inflight)

    async def acquire(self, view: EndpointView, key: int | None, *, waiting: Gauge | None = None,
                      routed: Callable[[bool], None] | None = None) -> str | None:
        """A replica with a free slot, counted as taken (give it back with :meth:`release`); None when the endpoint
        has no replica at all (the caller waits for one to become ready). Queues while every replica is at its
        cap (counted in `waiting`); raises :class:`ReplicasSaturated` when the queue is full or the wait outlasts
        `queue_timeout`. A keyed request is reported to `routed`: whether its replica had been sent that key
        recently, i.e. probably holds its prefix."""
        target = self.pick(view, key) if not self._queues.get(view.id) else None  # no overtaking the queue
        if target is None and view.targets:
            target = await self._wait_for_slot(view, key, waiting)
        if target is not None:
            if len(self._endpoint_of) >= MAX_ENTRIES and target not in self._endpoint_of:  # replicas come and go
                idle = [t for t, n in self.outstanding.items() if n == 0]
                for t in idle:
                    del self.outstanding[t]
                    self._endpoint_of.pop(t, None)
                    self._recent.pop(t, None)
            self.outstanding[target] = self.outstanding.get(target, 0) + 1
            self._endpoint_of[target] = view.id
            if key is not None:
                warm = self._remember(target, key)
                if routed is not None:
                    routed(warm)
        return target

    async def _wait_for_slot(self, view: EndpointView, key: int | None, waiting: Gauge | None) -> str | None:
        policy = self.policy
        queue = self._queues.setdefault(view.id, collections.deque())
        retry_after = max(1, math.ceil(policy.queue_timeout / 2))
        if len(queue) >= policy.queue_size:
            raise ReplicasSaturated(f"every replica of {view.namespace}/{view.name} is busy and "
                                    f"{policy.queue_size} requests are already waiting", retry_after=retry_after)
        deadline = time.monotonic() + policy.queue_timeout
        turn: asyncio.Future = asyncio.get_running_loop().create_future()
        queue.append(turn)
        if waiting is not None:
            waiting.inc()
        try:
            while True:
                if queue[0] is turn:
                    current = await self.get(view.namespace, view.name)
                    if current is None or not current.targets:
                        return None
                    view = current
                    target = self.pick(view, key)
                    if target is not None:
                        return target
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReplicasSaturated(
                        f"every replica of {view.namespace}/{view.name} stayed at its limit of "
                        f"{policy.max_inflight} requests in flight for {policy.queue_timeout:g}s",
                        retry_after=retry_after)
                try:
                    await asyncio.wait_for(asyncio.shield(turn), min(remaining, RECHECK_S))
                except TimeoutError:
                    pass
                if turn.done():  # woken: a fresh future in the same place for the next wake
                    fresh = asyncio.get_running_loop().create_future()
                    queue[queue.index(turn)] = fresh
                    turn = fresh
        finally:
            if waiting is not None:
                waiting.dec()
            if turn in queue:
                queue.remove(turn)
            if not queue:
                self._queues.pop(view.id, None)
            else:
                self._wake(view.id)

    def _remember(self, target: str, key: int) -> bool:
        recent = self._recent.get(target)
        if recent is None:
            recent = self._recent[target] = collections.OrderedDict()
        warm = key in recent
        recent[key] = None
        recent.move_to_end(key)
        if len(recent) > RECENT_KEYS:
            recent.popitem(last=False)
        return warm

    def release(self, target: str) -> None:
        self.outstanding[target] = max(0, self.outstanding.get(target, 1) - 1)
        endpoint_id = self._endpoint_of.get(target)
        if endpoint_id is not None:
            self._wake(endpoint_id)

    def _wake(self, endpoint_id: int) -> None:
        queue = self._queues.get(endpoint_id)
        if queue and not queue[0].done():
            queue[0].set_result(None)

    def queued(self, endpoint_id: int) -> int:
        return len(self._queues.get(endpoint_id, ()))

    def mark_bad(self, target: str, seconds: float = 2.0) -> None:
        self._bad[target] = time.monotonic() + seconds
