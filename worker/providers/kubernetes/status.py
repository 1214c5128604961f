"""Pure mapping from cached Kubernetes objects to an `ObservedDeployment`; no I/O, unit-testable.

What each stuck state looks like in the API and what we report:

* scheduler cannot place a pod: condition `PodScheduled=False, reason=Unschedulable` with the scheduler's message
  (``0/4 nodes are available: 3 Insufficient nvidia.com/gpu ...``) -> `pending_reason`
* scheduled, not ready (downloading, loading the model, startup probe not passed yet) -> replicas not ready,
  no failure: the reconciler reports `initializing`
* container waiting `ImagePullBackOff`/`ErrImagePull`/`InvalidImageName` -> `ImagePullFailed`
* `CrashLoopBackOff` (or a terminated container) whose last state is `OOMKilled` -> `OOMKilled`, otherwise
  `CrashLoopBackOff`; the message carries the last termination message (the runtime's last log lines, thanks to
  `terminationMessagePolicy: FallbackToLogsOnError`)
* the model-download init container failing -> `ModelLoadFailed`
* `CreateContainerConfigError` (missing Secret key, bad env) -> `InvalidSpec`
* Deployment condition `Progressing=False, reason=ProgressDeadlineExceeded` -> `ProgressDeadlineExceeded`
* rollout in progress (`kubectl rollout status` rules) -> `rollout_complete=False`
"""

from __future__ import annotations

from common.kube_names import RUNTIME_CONTAINER
from worker.providers.base import FailureReason, ObservedDeployment, ReplicaStatus
from worker.providers.kubernetes.manifests import ANNOTATION_REVISION, DOWNLOAD_CONTAINER

IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                      "RegistryUnavailable"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _condition(obj: dict, ctype: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def _pod_revision(pod: dict) -> int | None:
    return _int((pod["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION))


def _container_failure(pod: dict) -> tuple[FailureReason, str] | None:
    status = pod.get("status") or {}
    for cs in status.get("initContainerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            return FailureReason.IMAGE_PULL_FAILED, f"{waiting['reason']}: {waiting.get('message') or cs.get('image')}"
        if cs.get("name") == DOWNLOAD_CONTAINER and terminated and terminated.get("exitCode", 0) != 0:
            detail = terminated.get("message") or terminated.get("reason") or f"exit code {terminated.get('exitCode')}"
            return FailureReason.MODEL_LOAD_FAILED, f"model download failed: {detail}".strip()
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        terminated = state.get("terminated") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_PULL_REASONS:
            return FailureReason.IMAGE_PULL_FAILED, f"{reason}: {waiting.get('message') or cs.get('image')}"
        if reason in CONFIG_REASONS:
            return FailureReason.INVALID_SPEC, f"{reason}: {waiting.get('message') or ''}".strip()
        dead = terminated or last
        if reason == "CrashLoopBackOff" or (terminated and terminated.get("exitCode", 0) != 0):
            oom = dead.get("reason") == "OOMKilled"
            kind = FailureReason.OOM_KILLED if oom else FailureReason.CRASH_LOOP
            parts = [f"{'OOMKilled' if oom else 'CrashLoopBackOff'}: container {cs.get('name')!r} exited"
                     f" with code {dead.get('exitCode', '?')}"
                     f" after {cs.get('restartCount', 0)} restarts"]
            if dead.get("message"):
                parts.append(f"last termination message: {dead['message'].strip()}")
            return kind, "; ".join(parts)
    return None


def _phase(pod: dict, ready: bool) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    if phase in ("Failed", "Succeeded"):
        return "Failed"
    if phase == "Running":
        return "Running" if ready else "Starting"
    return "Pending"


def _replica(pod: dict) -> ReplicaStatus:
    ready_cond = _condition(pod, "Ready")
    ready = bool(ready_cond and ready_cond.get("status") == "True") and not pod["metadata"].get("deletionTimestamp")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    failure = _container_failure(pod)
    sched = _condition(pod, "PodScheduled")
    message = failure[1] if failure else (sched.get("message") if sched and sched.get("status") == "False" else None)
    return ReplicaStatus(name=pod["metadata"]["name"], ready=ready, url=_pod_url(pod) if ready else None,
                         revision=_pod_revision(pod), phase=_phase(pod, ready), restarts=restarts, message=message)


def _pod_url(pod: dict) -> str | None:
    """The pod's own address, which the gateway (in the cluster) routes to: the Service would spread requests that
    share a prompt prefix over every pod, and each pod's prefix cache would hold a little of everything."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == RUNTIME_CONTAINER:
            for port in container.get("ports") or []:
                if port.get("name") == "http" and port.get("containerPort"):
                    return f"http://{host}:{int(port['containerPort'])}"
    return None


def rollout_complete(deployment: dict) -> bool:
    """`kubectl rollout status` semantics: the controller saw the spec and every replica is new and available."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(deployment["metadata"].get("generation") or 0):
        return False
    return (int(status.get("updatedReplicas") or 0) >= want and int(status.get("replicas") or 0) <= want
            and int(status.get("availableReplicas") or 0) >= want)


def observe(*, deployment: dict | None, pods: list[dict], warnings: list[dict], service_url: str | None) -> ObservedDeployment:
    live_pods = sorted(pods, key=lambda p: p["metadata"]["name"])
    if deployment is None and not live_pods:
        return ObservedDeployment(exists=False)
    replicas = tuple(_replica(p) for p in live_pods)
    revision = _int(((deployment or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_REVISION))
    desired_replicas = int(((deployment or {}).get("spec") or {}).get("replicas", 0) or 0)

    # Failures: judge the pods of the revision being rolled out first, so a broken update is reported even
    # while old pods still serve, and stale old-pod trouble does not mask a healthy new revision.
    alive = [p for p in live_pods if not p["metadata"].get("deletionTimestamp")]
    current = [p for p in alive if _pod_revision(p) == revision] or alive
    failure: FailureReason | None = None
    message: str | None = None
    for pod in current:
        found = _container_failure(pod)
        if found:
            failure, message = found
            break
    if failure is None and deployment is not None:
        progressing = _condition(deployment, "Progressing")
        if progressing and progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
            failure = FailureReason.PROGRESS_DEADLINE_EXCEEDED
            message = progressing.get("message") or "the rollout made no progress in time"

    pending_reason = None
    for pod in current:
        sched = _condition(pod, "PodScheduled")
        if sched and sched.get("status") == "False" and sched.get("reason") in ("Unschedulable", "SchedulerError"):
            pending_reason = sched.get("message") or sched.get("reason")
            break
    if pending_reason is None and deployment is not None:
        replica_failure = _condition(deployment, "ReplicaFailure")
        if replica_failure and replica_failure.get("status") == "True":
            pending_reason = f"{replica_failure.get('reason')}: {replica_failure.get('message')}"
    if message is None and pending_reason is None:
        # Warning events (FailedMount, FailedCreate, BackOff ...) explain pods stuck without a condition to say so.
        # Events name their object: the Deployment (the key), its ReplicaSets and pods (key-<hash>[-<hash>]).
        key = deployment["metadata"]["name"] if deployment else None
        names = {p["metadata"]["name"] for p in current}

        def ours(event: dict) -> bool:
            name = (event.get("involvedObject") or {}).get("name") or ""
            return name in names or (key is not None and (name == key or name.startswith(key + "-")))

        recent = [e for e in warnings if ours(e)]
        if recent and not any(r.ready for r in replicas):
            last = max(recent, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
            message = f"{last.get('reason')}: {last.get('message')}"
            # The scheduler writes its FailedScheduling event and the pod's PodScheduled condition separately; the
            # event can reach the cache first. A still unscheduled pod it names is pending for the same reason.
            if last.get("reason") == "FailedScheduling":
                named = (last.get("involvedObject") or {}).get("name")
                pod = next((p for p in current if p["metadata"]["name"] == named), None)
                if pod is not None and not (pod.get("spec") or {}).get("nodeName"):
                    pending_reason = last.get("message") or "FailedScheduling"
                    message = None

    return ObservedDeployment(
        exists=True,
        revision=revision,
        desired_replicas=desired_replicas,
        replicas=replicas,
        service_url=service_url if deployment is not None else None,
        rollout_complete=rollout_complete(deployment) if deployment is not None else False,
        failure=failure,
        pending_reason=pending_reason,
        message=message if message is not None else pending_reason,
    )
