"""The reconciler's impure shell: read desired (DB) and observed (provider), plan, act, record status and events.

Level-triggered: `reconcile_endpoint` can run any number of times, in any order, after any crash; it looks at the
world as it is now and moves it one step toward the spec. It returns how soon it wants to look again (None when
converged) instead of waiting, so a worker thread is never parked on a slow replica.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import session_scope
from common.engines import engine_info
from common.envpolicy import refused_env_name
from common.failure import one_line
from common.errors import ControlPlaneError
from common.internal_token import internal_token
from common.models import DesiredState, Endpoint, EndpointState, EventType, record_event
from common.observed import ObservedReplica, ObservedStatus
from common.redaction import redactor_for
from worker.hardware import resolve_hardware
from worker.plan import Action, Desired, Plan, plan
from worker.providers.base import (
    DesiredDeployment,
    ObservedDeployment,
    Provider,
    ProviderPermanentError,
)

log = logging.getLogger(__name__)

WARNING_STATES = {EndpointState.FAILED.value, EndpointState.UPDATE_FAILED.value}


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None
    state: str | None


def public_base_url(settings: Settings) -> str:
    return (settings.public_url or "http://127.0.0.1:8000").rstrip("/")


def endpoint_url(settings: Settings, endpoint: Endpoint) -> str:
    return f"{public_base_url(settings)}/endpoints/{endpoint.namespace}/{endpoint.name}"


# States in which an endpoint that has served before keeps its URL, as Hugging Face keeps it stable: a request to a
# scaled-to-zero URL wakes it, a paused one answers 503 saying so, an update keeps the old replicas serving.
STABLE_URL_STATES = {EndpointState.SCALED_TO_ZERO.value, EndpointState.PAUSED.value, EndpointState.UPDATING.value,
                     EndpointState.UPDATE_FAILED.value}


def publishes_url(state: str, endpoint: Endpoint) -> bool:
    """`running` gets its URL only once it was verified; never during a first start (old clients returned as soon
    as a URL appeared)."""
    if state == EndpointState.RUNNING.value:
        return True
    return state in STABLE_URL_STATES and endpoint.observed.last_ready_revision is not None


def health_route(endpoint: Endpoint) -> str:
    return "/" + (endpoint.spec.get("healthRoute") or "/health").lstrip("/")


def desired_view(endpoint: Endpoint) -> Desired:
    return Desired(
        desired_state=endpoint.desired_state,
        spec_revision=endpoint.spec_revision,
        min_replicas=endpoint.min_replicas,
        max_replicas=endpoint.max_replicas,
        desired_replicas=endpoint.desired_replicas,
        last_ready_revision=endpoint.observed.last_ready_revision,
        current_state=endpoint.state,
    )


def _tenant_env(endpoint: Endpoint) -> tuple[dict[str, str], dict[str, str]]:
    """The endpoint's env (image variant's, then the model's) and secrets as stored, refused names included."""
    model = endpoint.spec["model"]
    image = model.get("image") or {"huggingface": {}}
    variant = (next(iter(image.values())) if image else {}) or {}
    env = {str(k): str(v) for k, v in (model.get("env") or {}).items()}
    if isinstance(variant, dict):
        env = {**{str(k): str(v) for k, v in (variant.get("env") or {}).items()}, **env}
    return env, {str(k): str(v) for k, v in (endpoint.secrets or {}).items()}


def refused_env_names(endpoint: Endpoint) -> list[str]:
    """Names in the stored spec that the API refuses today (a row written before the policy, or around the API)."""
    env, secrets = _tenant_env(endpoint)
    return sorted({name for name in (*env, *secrets) if refused_env_name(name) is not None})


def build_deployment(endpoint: Endpoint, settings: Settings, replicas: int) -> DesiredDeployment:
    """The provider's view of the row. Env and secret names the API refuses never reach a provider, whatever the row
    holds: they configure interpreters and loaders, and every provider starts processes with them."""
    spec = endpoint.spec
    model = spec["model"]
    image = model.get("image") or {"huggingface": {}}
    variant = next(iter(image.values())) if image else {}
    variant = variant or {}
    # Where the engine listens unless the variant says: vLLM 8000, SGLang 30000, llama.cpp 8080, TGI/TEI 80.
    default_port = engine_info(next(iter(image))).default_port if image else 80
    env, secrets = _tenant_env(endpoint)
    env = {k: v for k, v in env.items() if refused_env_name(k) is None}
    secrets = {k: v for k, v in secrets.items() if refused_env_name(k) is None}
    hardware = resolve_hardware(settings, spec["provider"]["vendor"], spec["provider"]["region"],
                                spec["compute"]["instanceType"], spec["compute"]["instanceSize"])
    return DesiredDeployment(
        endpoint_id=endpoint.id, namespace=endpoint.namespace, name=endpoint.name, key=endpoint.provider_key,
        revision=endpoint.spec_revision, replicas=replicas, repository=model["repository"],
        model_revision=model.get("revision"), framework=model.get("framework") or "pytorch", task=model.get("task"),
        image=image, command=model.get("command"), args=model.get("args"), env=env,
        secrets=secrets,
        health_route=health_route(endpoint),
        port=int(variant.get("port") or default_port) if isinstance(variant, dict) else default_port,
        hardware=hardware, endpoint_type=endpoint.type,
        registry_credentials=({str(k): str(v) for k, v in endpoint.image_credentials.items() if v is not None}
                              if endpoint.image_credentials and "custom" in image else None),
    )


def probe_health(settings: Settings, endpoint: Endpoint) -> bool:
    """GET {url}{healthRoute} through the gateway, exactly as huggingface_hub's wait() will."""
    url = endpoint_url(settings, endpoint) + health_route(endpoint)
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {internal_token(settings)}"}, timeout=5.0)
    except httpx.HTTPError as exc:
        log.info("health probe of %s failed: %s", url, exc)
        return False
    return response.status_code == 200


def _conditions(previous: list, wanted: dict[str, tuple[bool, str, str | None]], now: str) -> list[dict]:
    by_type = {c.get("type"): c for c in previous or []}
    result = []
    for ctype, (status, reason, message) in wanted.items():
        old = by_type.get(ctype)
        value = "True" if status else "False"
        changed = old is None or old.get("status") != value
        result.append({"type": ctype, "status": value, "reason": reason, "message": one_line(message),
                       "lastTransitionTime": now if changed else old.get("lastTransitionTime", now)})
    return result


def _observed_status(previous: ObservedStatus, o: ObservedDeployment, p: Plan, spec_revision: int) -> ObservedStatus:
    update: dict = {
        "replicas": tuple(ObservedReplica(name=r.name, ready=r.ready, url=r.url, revision=r.revision, phase=r.phase,
                                          restarts=r.restarts) for r in o.replicas),
        "service_url": o.service_url,
        "revision": o.revision,
    }
    if p.state == EndpointState.RUNNING.value:
        update["last_ready_revision"] = spec_revision
    return previous.model_copy(update=update)


def _fault_point(name: str) -> None:
    """Crash-safety tests stop a reconcile half-way here (ENDPOINTCTL_FAULT_PAUSE_<NAME>=seconds) to SIGKILL it."""
    delay = os.environ.get(f"ENDPOINTCTL_FAULT_PAUSE_{name.upper()}")
    if delay:
        log.warning("fault point %s: pausing %ss", name, delay)
        time.sleep(float(delay))


def reconcile_endpoint(factory: sessionmaker[Session], provider: Provider, settings: Settings,
                       endpoint_id: int) -> Outcome:
    with session_scope(factory) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        if endpoint is None:
            return Outcome(None, None)
        generation = endpoint.generation
        key = endpoint.provider_key
        desired = desired_view(endpoint)
        deployment = None
        if desired.desired_state != DesiredState.DELETED.value:
            try:
                deployment = build_deployment(endpoint, settings, 0)
            except (KeyError, ValueError, TypeError, ControlPlaneError) as exc:
                return _record_invalid(session, endpoint, f"invalid spec: {exc}")

    observed = provider.observe(key)
    p = plan(desired, observed)
    if p.action is Action.APPLY:
        try:
            provider.apply(_with_replicas(deployment, p.replicas))
        except ProviderPermanentError as exc:
            with session_scope(factory) as session:
                endpoint = session.get(Endpoint, endpoint_id)
                return _record_invalid(session, endpoint, str(exc)) if endpoint else Outcome(None, None)
        _fault_point("after_apply")
        observed = provider.observe(key)
        p = plan(desired, observed)
    elif p.action is Action.DELETE:
        provider.delete(key)
        observed = provider.observe(key)
        p = plan(desired, observed)
    if p.action is Action.FINALIZE:
        with session_scope(factory) as session:
            endpoint = session.get(Endpoint, endpoint_id)
            if endpoint is not None and endpoint.desired_state == DesiredState.DELETED.value:
                record_event(session, endpoint, type=EventType.NORMAL, reason="Deleted",
                             message="all replicas stopped and provider objects removed")
                session.flush()
                session.delete(endpoint)
        return Outcome(None, "deleted")

    if p.wants_health_check:
        # The gateway routes from the row's observed replicas, so publish them before probing through it.
        with session_scope(factory) as session:
            endpoint = session.get(Endpoint, endpoint_id)
            if endpoint is None:
                return Outcome(None, None)
            endpoint.observed = _observed_status(endpoint.observed, observed, p, desired.spec_revision)
        healthy = probe_health(settings, endpoint) if provider.verify_through_gateway else True
        p = plan(desired, observed, health_ok=healthy)

    return _write_status(factory, settings, provider, endpoint_id, generation, observed, p, deployment)


def _with_replicas(deployment: DesiredDeployment, replicas: int) -> DesiredDeployment:
    from dataclasses import replace

    return replace(deployment, replicas=replicas)


def _record_invalid(session: Session, endpoint: Endpoint, message: str) -> Outcome:
    message = redactor_for(endpoint.secrets, endpoint.image_credentials)(message) or ""
    if endpoint.state != EndpointState.FAILED.value or endpoint.message != message:
        record_event(session, endpoint, type=EventType.WARNING, reason="InvalidSpec", message=message)
    endpoint.state = EndpointState.FAILED.value
    endpoint.message = message
    endpoint.url = None
    endpoint.ready_replicas = 0
    endpoint.observed_generation = endpoint.generation
    endpoint.updated_at = datetime.now(UTC)
    return Outcome(None, endpoint.state)


def _write_status(factory: sessionmaker[Session], settings: Settings, provider: Provider, endpoint_id: int,
                  generation: int, observed: ObservedDeployment, p: Plan,
                  deployment: DesiredDeployment | None) -> Outcome:
    now = datetime.now(UTC)
    with session_scope(factory) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        if endpoint is None:
            return Outcome(None, None)
        if endpoint.generation != generation:
            # The API changed the desired state while we acted; our status may be stale. Look again at once.
            return Outcome(0.0, endpoint.state)
        url = endpoint_url(settings, endpoint) if publishes_url(p.state, endpoint) else None
        # Messages and conditions carry replica output (log tails, exit reasons): no secret value may pass.
        redact = redactor_for(endpoint.secrets, endpoint.image_credentials)
        message = redact(one_line(p.message))  # one line: a provider's log tail belongs in `logs`
        if p.state == EndpointState.RUNNING.value and not message and deployment is not None:
            # Which engine serves: a GGUF repository may run llama.cpp, and the variant alone does not say the image.
            message = redact(one_line(f"engine: {provider.engine(deployment)}"))
        conditions = _conditions(endpoint.conditions, p.conditions, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        conditions = redact.conditions(conditions)
        new_observed = _notices(session, endpoint, deployment,
                                _observed_status(endpoint.observed, observed, p, endpoint.spec_revision), provider)
        changed = (endpoint.state != p.state or endpoint.message != message or endpoint.url != url
                   or endpoint.ready_replicas != p.ready_replicas or endpoint.target_replicas != p.replicas
                   or endpoint.observed != new_observed or endpoint.observed_generation != generation)
        if not changed:
            return Outcome(p.requeue_after, p.state)
        if endpoint.state != p.state:
            kind = EventType.WARNING if p.state in WARNING_STATES or p.reason == "InsufficientCapacity" else EventType.NORMAL
            detail = f": {message}" if message else ""
            record_event(session, endpoint, type=kind, reason=p.reason or p.state,
                         message=f"{endpoint.state} → {p.state} ({p.ready_replicas}/{p.replicas} replicas ready){detail}")
            log.info("endpoint %s/%s: %s → %s", endpoint.namespace, endpoint.name, endpoint.state, p.state)
        endpoint.state = p.state
        endpoint.message = message
        endpoint.url = url
        endpoint.ready_replicas = p.ready_replicas
        endpoint.target_replicas = p.replicas
        endpoint.conditions = conditions
        endpoint.observed = new_observed
        endpoint.observed_generation = generation
        endpoint.updated_at = now
        return Outcome(p.requeue_after, p.state)


def _notices(session: Session, endpoint: Endpoint, deployment: DesiredDeployment | None, observed: ObservedStatus,
             provider: Provider) -> ObservedStatus:
    """One-time events per spec revision about how the provider interprets the spec (on this host); returns
    `observed` marked as noticed for this revision."""
    if deployment is None or observed.noticed_revision == endpoint.spec_revision:
        return observed
    refused = refused_env_names(endpoint)
    if refused:
        record_event(session, endpoint, type=EventType.WARNING, reason="EnvRefused",
                     message=f"not passed to the replicas (set by the platform only): {', '.join(refused)}")
    for notice in provider.spec_notices(deployment):
        record_event(session, endpoint, type=EventType.NORMAL, reason=notice.reason, message=notice.message)
    return observed.model_copy(update={"noticed_revision": endpoint.spec_revision})


def all_endpoint_ids(factory: sessionmaker[Session]) -> list[int]:
    with session_scope(factory) as session:
        return list(session.scalars(select(Endpoint.id).order_by(Endpoint.id)))
