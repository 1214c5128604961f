"""The consumer watchdog's decision: probe after quiet, exit only when a probe accepted by the broker never
arrives, and never while every slot is busy."""

from __future__ import annotations

from worker.watchdog import Action, StallDetector


def test_quiet_worker_probes_then_exits_if_the_probe_never_arrives():
    d = StallDetector(stall_timeout=60, last_received=0)
    assert d.step(10, busy=False) is Action.NOTHING
    assert d.step(30, busy=False) is Action.PROBE
    d.probe_sent(30)
    assert d.step(60, busy=False) is Action.NOTHING
    assert d.step(89, busy=False) is Action.NOTHING
    assert d.step(90, busy=False) is Action.EXIT


def test_any_message_after_the_probe_clears_it():
    d = StallDetector(stall_timeout=60, last_received=0)
    assert d.step(30, busy=False) is Action.PROBE
    d.probe_sent(30)
    d.received(31)
    assert d.step(100, busy=False) is Action.PROBE  # quiet again for long enough: a new probe, not an exit
    d.probe_sent(100)
    assert d.step(159, busy=False) is Action.NOTHING


def test_probe_not_published_is_not_a_stall():
    d = StallDetector(stall_timeout=60, last_received=0)
    assert d.step(30, busy=False) is Action.PROBE
    # The broker refused the publish (not recorded as sent): the next round probes again instead of exiting.
    assert d.step(200, busy=False) is Action.PROBE


def test_busy_worker_is_never_declared_stuck():
    d = StallDetector(stall_timeout=60, last_received=0)
    d.probe_sent(30)
    for t in range(31, 400, 7):
        assert d.step(t, busy=True) is Action.NOTHING
    assert d.step(400, busy=False) is Action.NOTHING  # the quiet time counts from when a slot freed up
    assert d.step(431, busy=False) is Action.PROBE
