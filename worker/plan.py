"""The pure heart of the reconciler: desired + observed → what to do and what status to publish.

No I/O here, so every transition is a table-driven unit test. The impure shell (`worker/reconcile.py`) reads the
database and the provider, feeds this function, acts on its answer and writes the status.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from common.models import DesiredState, EndpointState
from worker.providers.base import ObservedDeployment


class Action(str, enum.Enum):
    APPLY = "apply"  # make the provider run `replicas` replicas of the current spec revision
    DELETE = "delete"  # remove every provider object
    FINALIZE = "finalize"  # provider objects are gone: remove the row


@dataclass(frozen=True)
class Desired:
    desired_state: str
    spec_revision: int
    min_replicas: int
    max_replicas: int
    desired_replicas: int | None
    # Spec revision that last reached `running`; tells an update (→ updating/updateFailed) from a first start.
    last_ready_revision: int | None
    current_state: str


@dataclass(frozen=True)
class Plan:
    action: Action
    replicas: int = 0
    state: str = EndpointState.PENDING.value
    message: str | None = None
    reason: str = ""  # machine-readable reason for conditions and events
    requeue_after: float | None = None
    wants_health_check: bool = False  # publishing `running` needs the URL verified first
    ready_replicas: int = 0
    conditions: dict[str, tuple[bool, str, str | None]] = field(default_factory=dict)


def target_replicas(d: Desired) -> int:
    if d.desired_state in (DesiredState.PAUSED.value, DesiredState.SCALED_TO_ZERO.value, DesiredState.DELETED.value):
        return 0
    lower = max(1, d.min_replicas)
    upper = max(lower, d.max_replicas)
    wanted = d.desired_replicas if d.desired_replicas is not None else lower
    return min(max(wanted, lower), upper)


def pending_reason(o: ObservedDeployment) -> str:
    """The machine-readable reason replicas wait: the provider's own, else read from the scheduler's words."""
    if o.pending_cause is not None:
        return o.pending_cause.value
    return "InsufficientCapacity" if o.pending_reason and "Insufficient" in o.pending_reason else "Pending"


def plan(d: Desired, o: ObservedDeployment, *, health_ok: bool | None = None) -> Plan:
    """Decide. `health_ok` is None until the caller has probed the URL (only asked for when it matters)."""
    if d.desired_state == DesiredState.DELETED.value:
        if o.exists:
            return Plan(Action.DELETE, state=d.current_state, reason="Deleting", requeue_after=1.0,
                        ready_replicas=o.ready_replicas)
        return Plan(Action.FINALIZE, state=d.current_state, reason="Deleted")

    replicas = target_replicas(d)
    current = [r for r in o.replicas if r.revision == d.spec_revision and r.phase != "Terminated"]
    current_ready = sum(1 for r in current if r.ready)
    old_ready = sum(1 for r in o.replicas if r.revision != d.spec_revision and r.ready)

    if replicas == 0:
        paused = d.desired_state == DesiredState.PAUSED.value
        state = EndpointState.PAUSED.value if paused else EndpointState.SCALED_TO_ZERO.value
        stopping = o.ready_replicas > 0 or any(r.phase not in ("Terminated", "Stopped") for r in o.replicas)
        return Plan(Action.APPLY, 0, state, message=None, reason="Paused" if paused else "ScaledToZero",
                    requeue_after=1.0 if stopping else None, ready_replicas=o.ready_replicas,
                    conditions={"Ready": (False, "Paused" if paused else "ScaledToZero", None),
                                "Progressing": (stopping, "Stopping" if stopping else "Stopped", None)})

    updating = d.last_ready_revision is not None and d.last_ready_revision != d.spec_revision
    ready_total = current_ready + old_ready

    if o.failure is not None:
        state = EndpointState.UPDATE_FAILED.value if updating else EndpointState.FAILED.value
        return Plan(Action.APPLY, replicas, state, message=o.message or o.failure.value, reason=o.failure.value,
                    requeue_after=10.0, ready_replicas=ready_total,
                    conditions={"Ready": (updating and old_ready > 0, o.failure.value, o.message),
                                "Progressing": (False, o.failure.value, o.message)})

    serving_current = current_ready > 0 and old_ready == 0 and o.revision == d.spec_revision
    if serving_current:
        if d.current_state == EndpointState.RUNNING.value or health_ok:
            converged = current_ready >= replicas and o.rollout_complete
            # Serving, yet short of replicas the host cannot place: say so rather than look merely busy.
            progress = pending_reason(o) if o.pending_reason else ("ScalingReplicas" if not converged else "Complete")
            return Plan(Action.APPLY, replicas, EndpointState.RUNNING.value, message=o.pending_reason, reason="Running",
                        requeue_after=None if converged else 2.0, ready_replicas=current_ready,
                        conditions={"Ready": (True, "Running", None),
                                    "Progressing": (not converged, progress, o.pending_reason)})
        waiting = EndpointState.UPDATING.value if updating else EndpointState.INITIALIZING.value
        return Plan(Action.APPLY, replicas, waiting, message="replica ready; waiting for the endpoint URL to answer its health route",
                    reason="VerifyingURL", requeue_after=0.3, wants_health_check=health_ok is None,
                    ready_replicas=current_ready,
                    conditions={"Ready": (False, "VerifyingURL", None), "Progressing": (True, "VerifyingURL", None)})

    if updating:
        return Plan(Action.APPLY, replicas, EndpointState.UPDATING.value,
                    message=f"rolling out revision {d.spec_revision}", reason="Updating", requeue_after=1.0,
                    ready_replicas=ready_total,
                    conditions={"Ready": (old_ready > 0, "Updating", None), "Progressing": (True, "Updating", None)})
    if o.pending_reason:
        return Plan(Action.APPLY, replicas, EndpointState.PENDING.value, message=o.pending_reason,
                    reason=pending_reason(o), requeue_after=5.0, ready_replicas=ready_total,
                    conditions={"Ready": (False, "Pending", o.pending_reason), "Progressing": (True, "Pending", o.pending_reason)})
    return Plan(Action.APPLY, replicas, EndpointState.INITIALIZING.value, message=o.message,
                reason="Initializing", requeue_after=0.5, ready_replicas=ready_total,
                conditions={"Ready": (False, "Initializing", None), "Progressing": (True, "Initializing", None)})
