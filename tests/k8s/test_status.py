"""The pure status mapping, on object shapes as the API server and kubelets write them (no cluster needed)."""

from __future__ import annotations

from worker.providers.base import FailureReason
from worker.providers.kubernetes.status import observe, rollout_complete


def deployment(*, replicas=1, generation=1, observed=1, updated=1, total=1, available=1, conditions=(), revision=1):
    return {"metadata": {"name": "ep-1-x", "generation": generation,
                         "annotations": {"endpointctl.io/revision": str(revision)}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": list(conditions)}}


def pod(name="ep-1-x-abc-1", *, revision=1, phase="Running", ready=True, conditions=None, containers=None,
        init=None, deleting=False):
    meta = {"name": name, "annotations": {"endpointctl.io/revision": str(revision)}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    conds = conditions if conditions is not None else [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": {"phase": phase, "conditions": conds, "containerStatuses": containers or [],
                                         "initContainerStatuses": init or []}}


def test_no_objects_means_nothing_exists():
    assert observe(deployment=None, pods=[], warnings=[], service_url=None).exists is False


def test_ready_pod_of_a_complete_rollout():
    o = observe(deployment=deployment(), pods=[pod()], warnings=[], service_url="http://s")
    assert o.exists and o.ready_replicas == 1 and o.rollout_complete and o.failure is None and o.revision == 1
    assert o.replicas[0].phase == "Running" and o.service_url == "http://s"


def test_unschedulable_pod_reports_the_schedulers_message():
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    p = pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": msg}])
    o = observe(deployment=deployment(available=0), pods=[p], warnings=[], service_url=None)
    assert o.pending_reason == msg and o.failure is None and not o.rollout_complete


def test_crash_loop_with_oom_kill_is_oom():
    cs = [{"name": "runtime", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
           "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]
    o = observe(deployment=deployment(available=0), pods=[pod(ready=False, containers=cs)], warnings=[],
                service_url=None)
    assert o.failure == FailureReason.OOM_KILLED and "137" in o.message and "4 restarts" in o.message


def test_failed_model_download_is_model_load_failed():
    init = [{"name": "model-download", "state": {"terminated": {"exitCode": 1, "reason": "Error",
                                                                "message": "404 Client Error: Repository Not Found"}}}]
    o = observe(deployment=deployment(available=0), pods=[pod(phase="Pending", ready=False, init=init)], warnings=[],
                service_url=None)
    assert o.failure == FailureReason.MODEL_LOAD_FAILED and "Repository Not Found" in o.message


def test_progress_deadline_exceeded():
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "ep-1-x-2" has timed out progressing.'}
    o = observe(deployment=deployment(revision=2, generation=2, observed=2, updated=1, total=2, available=1,
                                      conditions=[cond]),
                pods=[pod(revision=1), pod("ep-1-x-def-1", revision=2, ready=False)], warnings=[], service_url=None)
    assert o.failure == FailureReason.PROGRESS_DEADLINE_EXCEEDED and "timed out" in o.message
    assert not o.rollout_complete and [r.revision for r in o.replicas if r.ready] == [1]


def test_failure_of_an_old_revision_does_not_mask_a_healthy_new_one():
    bad = [{"name": "runtime", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1}}}]
    o = observe(deployment=deployment(revision=2), pods=[pod(revision=1, ready=False, containers=bad),
                                                         pod("ep-1-x-n", revision=2)], warnings=[], service_url=None)
    assert o.failure is None


def test_rollout_not_complete_until_the_controller_saw_the_generation():
    assert not rollout_complete(deployment(generation=3, observed=2))
    assert not rollout_complete(deployment(replicas=2, updated=2, total=3, available=2))  # an old pod remains
    assert rollout_complete(deployment(replicas=0, updated=0, total=0, available=0))


def test_warning_events_explain_an_otherwise_silent_pending_pod():
    event = {"involvedObject": {"name": "ep-1-x-abc-1"}, "reason": "FailedMount", "lastTimestamp": "2026-01-01T00:00:00Z",
             "message": 'MountVolume.SetUp failed for volume "model": no space left'}
    o = observe(deployment=deployment(available=0), pods=[pod(phase="Pending", ready=False)], warnings=[event],
                service_url=None)
    assert o.message.startswith("FailedMount:") and o.failure is None


def test_terminating_pods_are_reported_as_such():
    o = observe(deployment=deployment(), pods=[pod(deleting=True), pod("ep-1-x-new")], warnings=[], service_url=None)
    assert sorted(r.phase for r in o.replicas) == ["Running", "Terminating"] and o.ready_replicas == 1


def test_failed_scheduling_event_seen_before_the_pod_condition_is_pending():
    """The scheduler's event can reach the cache before the pod's PodScheduled=False condition does."""
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    event = {"reason": "FailedScheduling", "message": msg, "lastTimestamp": "2026-01-01T00:00:01Z",
             "involvedObject": {"name": "ep-1-x-abc-1"}}
    unscheduled = pod(phase="Pending", ready=False, conditions=[])
    o = observe(deployment=deployment(available=0), pods=[unscheduled], warnings=[event], service_url=None)
    assert o.pending_reason == msg and o.message == msg and o.failure is None
    # Once the pod has a node, an old FailedScheduling event no longer makes it pending.
    scheduled = {**unscheduled, "spec": {"nodeName": "kwok-gpu-2"}}
    o = observe(deployment=deployment(available=0), pods=[scheduled], warnings=[event], service_url=None)
    assert o.pending_reason is None and "FailedScheduling" in o.message
