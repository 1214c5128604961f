"""Table-driven tests of the reconciler's pure plan: every state transition without any I/O."""

import pytest

from worker.plan import Action, Desired, plan, target_replicas
from worker.providers.base import FailureReason, ObservedDeployment, ReplicaStatus


def desired(**kw) -> Desired:
    base = dict(desired_state="running", spec_revision=1, min_replicas=1, max_replicas=1, desired_replicas=None,
                last_ready_revision=None, current_state="pending")
    base.update(kw)
    return Desired(**base)


def replica(name="r1-0", *, ready=True, revision=1, phase="Running"):
    return ReplicaStatus(name=name, ready=ready, url=f"http://127.0.0.1:1/{name}" if ready else None,
                         revision=revision, phase=phase)


def observed(*replicas, revision=1, desired_replicas=1, **kw):
    complete = kw.pop("rollout_complete", all(r.ready for r in replicas) and len(replicas) == desired_replicas)
    return ObservedDeployment(exists=True, revision=revision, desired_replicas=desired_replicas,
                              replicas=tuple(replicas), rollout_complete=complete, **kw)


@pytest.mark.parametrize("kw,expected", [
    (dict(), 1),
    (dict(min_replicas=0, max_replicas=3), 1),  # running always means at least one replica
    (dict(min_replicas=2, max_replicas=4, desired_replicas=3), 3),
    (dict(min_replicas=2, max_replicas=4, desired_replicas=9), 4),
    (dict(min_replicas=2, max_replicas=4, desired_replicas=0), 2),
    (dict(desired_state="paused", min_replicas=2, max_replicas=4), 0),
    (dict(desired_state="scaledToZero"), 0),
    (dict(desired_state="deleted"), 0),
])
def test_target_replicas(kw, expected):
    assert target_replicas(desired(**kw)) == expected


def test_create_from_nothing_applies_and_initializes():
    p = plan(desired(), ObservedDeployment(exists=False))
    assert p.action is Action.APPLY and p.replicas == 1
    assert p.state == "initializing" and p.requeue_after


def test_ready_replica_needs_a_verified_url_before_running():
    p = plan(desired(current_state="initializing"), observed(replica()))
    assert p.state == "initializing" and p.wants_health_check
    assert plan(desired(current_state="initializing"), observed(replica()), health_ok=False).state == "initializing"
    p = plan(desired(current_state="initializing"), observed(replica()), health_ok=True)
    assert p.state == "running" and p.requeue_after is None and p.ready_replicas == 1


def test_running_stays_running_without_reprobing():
    p = plan(desired(current_state="running", last_ready_revision=1), observed(replica()))
    assert p.state == "running" and not p.wants_health_check


def test_scaling_up_while_running_keeps_running():
    d = desired(current_state="running", last_ready_revision=1, min_replicas=1, max_replicas=3, desired_replicas=2)
    p = plan(d, observed(replica(), replica("r1-1", ready=False), desired_replicas=2))
    assert p.state == "running" and p.replicas == 2 and p.requeue_after


def test_pending_reason_is_surfaced():
    o = ObservedDeployment(exists=True, revision=1, desired_replicas=1, replicas=(replica(ready=False, phase="Pending"),),
                           rollout_complete=False, pending_reason="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    p = plan(desired(), o)
    assert p.state == "pending" and "Insufficient nvidia.com/gpu" in p.message and p.reason == "InsufficientCapacity"


def test_capacity_shortage_keeps_a_first_start_pending_and_a_serving_endpoint_running_with_the_reason():
    short = "not enough capacity: 1 of 2 replicas started on this host; CPU: each replica needs 1.2, 0.8 of 2 free"
    o = ObservedDeployment(exists=True, revision=1, desired_replicas=1, replicas=(), rollout_complete=False,
                           pending_reason=short, pending_cause=FailureReason.INSUFFICIENT_CAPACITY)
    p = plan(desired(), o)
    assert p.state == "pending" and p.message == short and p.reason == "InsufficientCapacity"
    d = desired(current_state="running", last_ready_revision=1, min_replicas=2, max_replicas=2)
    p = plan(d, observed(replica(), desired_replicas=2, pending_reason=short,
                         pending_cause=FailureReason.INSUFFICIENT_CAPACITY))
    assert p.state == "running" and p.message == short and p.requeue_after
    assert p.conditions["Progressing"] == (True, "InsufficientCapacity", short)


def test_failure_on_first_start_is_failed_and_on_update_is_update_failed():
    o = observed(replica(ready=False, phase="Failed"), failure=FailureReason.MODEL_LOAD_FAILED, message="boom")
    assert plan(desired(), o).state == "failed"
    d = desired(spec_revision=2, last_ready_revision=1, current_state="updating")
    o = observed(replica("r1-0", revision=1), replica("r2-0", ready=False, revision=2, phase="Failed"), revision=1,
                 failure=FailureReason.CRASH_LOOP, message="crash")
    p = plan(d, o)
    assert p.state == "updateFailed" and p.message == "crash" and p.ready_replicas == 1


def test_update_rolls_through_updating_then_running():
    d = desired(spec_revision=2, last_ready_revision=1, current_state="running")
    both = observed(replica("r1-0", revision=1), replica("r2-0", ready=False, revision=2), revision=1)
    assert plan(d, both).state == "updating"
    d2 = desired(spec_revision=2, last_ready_revision=1, current_state="updating")
    new_only = observed(replica("r2-0", revision=2), revision=2)
    assert plan(d2, new_only).wants_health_check
    assert plan(d2, new_only, health_ok=True).state == "running"


@pytest.mark.parametrize("state,expected", [("paused", "paused"), ("scaledToZero", "scaledToZero")])
def test_zero_replica_states(state, expected):
    p = plan(desired(desired_state=state, current_state="running"), observed(replica()))
    assert p.action is Action.APPLY and p.replicas == 0 and p.state == expected and p.requeue_after
    p = plan(desired(desired_state=state), observed(revision=1, desired_replicas=0))
    assert p.state == expected and p.requeue_after is None


def test_replica_lost_while_running_goes_back_to_initializing():
    d = desired(current_state="running", last_ready_revision=1)
    p = plan(d, observed(replica(ready=False, phase="Backoff"), rollout_complete=False))
    assert p.state == "initializing"


def test_delete_then_finalize():
    d = desired(desired_state="deleted", current_state="running")
    assert plan(d, observed(replica())).action is Action.DELETE
    assert plan(d, ObservedDeployment(exists=False)).action is Action.FINALIZE
