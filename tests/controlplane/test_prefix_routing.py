"""Prefix-aware replica choice and the gateway's bounded queue (controlplane/gateway/routing.py), as pure functions
and on a directory whose endpoint view is fixed (no database: the view is what the test says it is)."""

from __future__ import annotations

import asyncio
import json

import pytest

from controlplane.gateway.routing import (MAX_KEY_BODY, PREFIX_CHARS, EndpointDirectory, EndpointView,
                                          ReplicasSaturated, RoutingPolicy, choose, prefix_key, rank)

SYSTEM = [f"You are assistant number {i}. " + "Answer politely and in detail. " * 60 for i in range(4)]
A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


def chat(*messages: tuple[str, object], **extra) -> bytes:
    return json.dumps({"model": "tgi", "messages": [{"role": r, "content": c} for r, c in messages], **extra}).encode()


# -- the key ---------------------------------------------------------------------------------------------------------
def test_a_long_system_prompt_keys_every_question_under_it_alike():
    assert len(SYSTEM[0]) > PREFIX_CHARS
    keys = {prefix_key(chat(("system", SYSTEM[0]), ("user", q))) for q in ("What is 2+2?", "Name a colour.", "Hi")}
    assert len(keys) == 1 and None not in keys
    assert prefix_key(chat(("system", SYSTEM[1]), ("user", "Hi"))) not in keys


def test_a_short_system_prompt_keys_on_the_first_user_turn_and_a_conversation_keeps_its_key():
    first = chat(("system", "Be brief."), ("user", "Tell me about owls."))
    later = chat(("system", "Be brief."), ("user", "Tell me about owls."), ("assistant", "Owls are birds."),
                 ("user", "And their eyes?"), max_tokens=20, stream=True)
    other = chat(("system", "Be brief."), ("user", "Tell me about cats."))
    assert prefix_key(first) == prefix_key(later) != prefix_key(other)
    no_system = chat(("user", "Tell me about owls."))
    assert prefix_key(no_system) not in (None, prefix_key(first))


def test_content_parts_key_like_the_same_text():
    parts = [{"type": "text", "text": "Tell me "}, {"type": "image_url", "image_url": {"url": "data:,"}},
             {"type": "text", "text": "about owls."}]
    assert prefix_key(chat(("user", parts))) == prefix_key(chat(("user", "Tell me about owls.")))


def test_completion_prompts_tgi_inputs_token_ids_and_batches():
    text = "def fibonacci(n):"
    assert prefix_key(json.dumps({"prompt": text}).encode()) == prefix_key(json.dumps({"inputs": text}).encode())
    assert prefix_key(json.dumps({"prompt": [text, "x"]}).encode()) == prefix_key(json.dumps({"prompt": text}).encode())
    # The same text through a chat template is another token sequence: another key.
    assert prefix_key(json.dumps({"prompt": text}).encode()) != prefix_key(chat(("user", text)))
    ids = prefix_key(json.dumps({"prompt": [1, 2, 3, 4]}).encode())
    assert ids is not None and ids == prefix_key(json.dumps({"prompt": [[1, 2, 3, 4]]}).encode())
    assert ids != prefix_key(json.dumps({"prompt": [1, 2, 3, 5]}).encode())
    # Only the beginning counts.
    long = "x" * PREFIX_CHARS
    key = lambda text: prefix_key(json.dumps({"prompt": text}).encode())  # noqa: E731
    assert key(long + "a") == key(long + "b")


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b"{", b'{"prompt": "\xff\xfe"}', b"\x00\x01", b"{}",
    b'{"prompt": ""}', b'{"prompt": 12}', b'{"prompt": null}', b'{"messages": "hi"}', b'{"messages": [1, 2]}',
    b'{"messages": []}', b'{"messages": [{"role": "user", "content": 5}]}', b'{"messages": [{"role": "assistant"}]}',
    b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # deeper than Python's recursion limit
    b'{"prompt": ' + b"1" * 5000 + b"}",  # over Python's integer-string limit
    b'{"prompt": "' + b"a" * MAX_KEY_BODY + b'"}',  # too large to parse here
], ids=lambda b: repr(b[:30]))
def test_bodies_without_a_usable_prompt_have_no_key(body):
    assert prefix_key(body) is None


def test_lone_surrogates_and_odd_text_still_key():
    assert isinstance(prefix_key(b'{"prompt": "\\ud800 half a pair"}'), int)
    assert isinstance(prefix_key(chat(("system", "\x1f\x1e\u202e"), ("user", "\x00"))), int)


# -- the choice ------------------------------------------------------------------------------------------------------
def test_rendezvous_order_moves_only_the_keys_of_a_removed_replica():
    keys = [prefix_key(json.dumps({"prompt": f"prompt {i}"}).encode()) for i in range(400)]
    before = {k: rank(k, [A, B, C])[0] for k in keys}
    after = {k: rank(k, [A, C])[0] for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != B)
    assert {before[k] for k in keys} == {A, B, C}
    assert rank(keys[0], [C, A, B]) == rank(keys[0], [A, B, C])  # independent of the listing order


def test_a_prefix_stays_on_its_replica_until_it_carries_more_than_its_share():
    key = prefix_key(chat(("system", SYSTEM[0]), ("user", "hi")))
    home, other = rank(key, [A, B])
    pick = lambda load: choose([A, B], load, key, load_factor=1.25, max_inflight=128)  # noqa: E731
    assert pick({}) == home
    assert pick({home: 1}) == home  # bound ceil(1.25 * 2 / 2) = 2
    assert pick({home: 2}) == other  # bound ceil(1.25 * 3 / 2) = 2: saturated, spill
    assert pick({home: 2, other: 2}) == home  # bound ceil(1.25 * 5 / 2) = 4
    assert pick({home: 5, other: 1}) == other
    # Without a key: least outstanding, as before.
    assert choose([A, B], {A: 3, B: 1}, None, load_factor=1.25, max_inflight=128) == B


def test_loads_stay_bounded_under_one_hot_prefix():
    key = prefix_key(json.dumps({"prompt": "the same start"}).encode())
    load: dict[str, int] = {}
    for _ in range(60):
        target = choose([A, B, C], load, key, load_factor=1.25, max_inflight=128)
        load[target] = load.get(target, 0) + 1
    assert max(load.values()) <= 25  # ceil(1.25 * 60 / 3)
    # Filled in the key's rendezvous order: the first two to the bound, the rest to the third.
    assert [load[t] for t in rank(key, [A, B, C])] == [25, 25, 10]


def test_the_per_replica_cap_spills_then_refuses():
    key = prefix_key(json.dumps({"prompt": "p"}).encode())
    home, other = rank(key, [A, B])
    assert choose([A, B], {home: 1}, key, load_factor=10.0, max_inflight=1) == other
    assert choose([A, B], {A: 1, B: 1}, key, load_factor=10.0, max_inflight=1) is None
    assert choose([A, B], {A: 1, B: 1}, None, load_factor=10.0, max_inflight=1) is None


def test_four_system_prompts_each_land_on_one_replica_when_requests_do_not_overlap():
    """The routing-quality figure the bench prints: every request after a prefix's first finds its replica warm."""
    seen: dict[str, set[int]] = {A: set(), B: set()}
    warm = total = 0
    for round_ in range(8):
        for i, system in enumerate(SYSTEM):
            key = prefix_key(chat(("system", system), ("user", f"question {round_}")))
            target = choose([A, B], {}, key, load_factor=1.25, max_inflight=128)
            warm += i in seen[target]
            total += 1
            seen[target].add(i)
    assert warm == total - len(SYSTEM)


# -- the queue -------------------------------------------------------------------------------------------------------
class FixedDirectory(EndpointDirectory):
    """The directory with its endpoint view set by the test instead of read from the database."""

    def __init__(self, view: EndpointView, policy: RoutingPolicy) -> None:
        super().__init__(factory=None, policy=policy)
        self.view = view

    async def get(self, namespace: str, name: str, *, max_age: float = 0.5) -> EndpointView | None:
        return self.view


def directory(targets=(A, B), **policy) -> FixedDirectory:
    view = EndpointView(id=1, namespace="ns", name="ep", type="protected", desired_state="running",
                        state="running", message=None, targets=tuple(targets))
    return FixedDirectory(view, RoutingPolicy(**{"max_inflight": 1, "queue_timeout": 30.0, **policy}))


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_when_every_replica_is_at_its_cap_requests_queue_in_order_and_take_freed_slots():
    d = directory()
    first, second = await d.acquire(d.view, None), await d.acquire(d.view, None)
    assert {first, second} == {A, B} and d.outstanding == {A: 1, B: 1}
    waiters = [asyncio.create_task(d.acquire(d.view, None)) for _ in range(2)]
    await _until(lambda: d.queued(1) == 2)
    # A new request does not overtake the queue even if it arrives just as a slot frees.
    d.release(first)
    late = asyncio.create_task(d.acquire(d.view, None))
    assert await waiters[0] == first
    assert not waiters[1].done() and not late.done()
    d.release(second)
    assert await waiters[1] == second
    d.release(first)
    assert await late == first
    assert d.queued(1) == 0


async def test_a_queued_request_gives_up_with_retry_after_and_a_full_queue_refuses_at_once():
    d = directory(queue_timeout=0.3, queue_size=1)
    await d.acquire(d.view, None)
    await d.acquire(d.view, None)
    waiting = asyncio.create_task(d.acquire(d.view, None))
    await _until(lambda: d.queued(1) == 1)
    with pytest.raises(ReplicasSaturated, match="1 requests are already waiting") as full:
        await d.acquire(d.view, None)
    with pytest.raises(ReplicasSaturated, match="stayed at its limit of 1 requests in flight") as timed_out:
        await waiting
    assert full.value.retry_after >= 1 and timed_out.value.retry_after >= 1
    assert d.queued(1) == 0 and d.outstanding == {A: 1, B: 1}


async def test_a_waiter_that_is_cancelled_leaves_the_queue_and_the_next_one_moves_up():
    d = directory()
    await d.acquire(d.view, None)
    await d.acquire(d.view, None)
    gone = asyncio.create_task(d.acquire(d.view, None))
    kept = asyncio.create_task(d.acquire(d.view, None))
    await _until(lambda: d.queued(1) == 2)
    gone.cancel()
    await _until(lambda: d.queued(1) == 1)
    d.release(B)
    assert await kept == B


async def test_no_replica_at_all_is_the_callers_to_wait_for():
    d = directory(targets=())
    assert await d.acquire(d.view, None) is None


async def test_prefix_routing_can_be_turned_off():
    key = prefix_key(json.dumps({"prompt": "p"}).encode())
    home, other = rank(key, [A, B])
    on, off = directory(max_inflight=128), directory(max_inflight=128, prefix_routing=False)
    on.outstanding, off.outstanding = {home: 1}, {home: 1}
    assert await on.acquire(on.view, key) == home
    assert await off.acquire(off.view, key) == other


async def test_keyed_requests_are_reported_warm_when_their_replica_was_sent_the_key_before():
    d = directory(max_inflight=128)
    seen: list[bool] = []
    keys = [prefix_key(json.dumps({"prompt": f"system {i}"}).encode()) for i in range(4)]
    for _ in range(3):
        for key in keys:
            d.release(await d.acquire(d.view, key, routed=seen.append))
    await d.acquire(d.view, None, routed=seen.append)  # no key: nothing to report
    assert seen == [False] * 4 + [True] * 8
