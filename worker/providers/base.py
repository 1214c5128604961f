"""The provider protocol: the only way the worker touches where replicas run.

A provider turns a `DesiredDeployment` (what the reconciler wants, fully resolved: image, env, replica count,
hardware) into running replicas, and reports an `ObservedDeployment` (what actually runs). It never decides
*what* should run; that is the reconciler's pure plan. Every method is idempotent, so a reconcile interrupted at
any point can simply run again.

Errors: providers raise `ProviderTemporaryError` for conditions worth retrying with backoff (API server
unreachable, conflicts) and `ProviderPermanentError` for specs that can never work; client exceptions of the
underlying system (kubernetes ApiException, OSError) are translated at the provider boundary.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class FailureReason(str, enum.Enum):
    """Why an endpoint cannot serve; goes to status conditions and, for humans, to status.message."""

    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    CRASH_LOOP = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    INVALID_SPEC = "InvalidSpec"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


class ProviderError(Exception):
    """Base of every error a provider raises."""


class ProviderTemporaryError(ProviderError):
    """Worth retrying later; `delay` is a hint in seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class ProviderPermanentError(ProviderError):
    """Retrying the same spec cannot help (bad spec, unsupported image)."""


@dataclass(frozen=True)
class HardwareSpec:
    """The catalog entry resolved for the endpoint's compute (accelerator counts drive GPU limits)."""

    vendor: str
    region: str
    instance_type: str
    instance_size: str
    accelerator: str  # "cpu" | "gpu"
    num_accelerators: int = 0
    num_cpus: int | None = None
    memory_gb: float | None = None
    gpu_memory_gb: float | None = None
    # Kubernetes scheduling hints taken from the catalog (node selector labels, GPU product).
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_product: str | None = None


@dataclass(frozen=True)
class DesiredDeployment:
    """Everything a provider needs to run an endpoint's replicas; built by the reconciler from the DB row."""

    endpoint_id: int
    namespace: str
    name: str
    key: str  # stable, DNS-safe identifier used to name provider objects (e.g. "ep-12-my-endpoint")
    revision: int  # spec revision: bumps on every spec change, so providers can roll out updates
    replicas: int
    repository: str
    model_revision: str | None
    framework: str
    task: str | None
    image: dict  # one-key union as on the wire: {"huggingface": {}} | {"custom": {...}} | {"tgi": {...}} ...
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    secrets: dict[str, str]  # never logged, never put into events
    health_route: str
    port: int
    hardware: HardwareSpec
    endpoint_type: str = "authenticated"
    # Custom image only: {"username", "password"} for its registry. Never logged, never put into events.
    registry_credentials: dict[str, str] | None = None


@dataclass(frozen=True)
class ReplicaStatus:
    name: str
    ready: bool
    url: str | None = None  # where the gateway can reach this replica directly (a local port, a pod IP)
    revision: int | None = None
    phase: str = "Pending"  # Pending | Starting | Running | Failed | Terminating
    restarts: int = 0
    message: str | None = None


@dataclass(frozen=True)
class ObservedDeployment:
    """What runs now. `exists=False` means the provider has no objects at all for the key."""

    exists: bool
    revision: int | None = None  # spec revision the provider currently runs (None while nothing runs)
    desired_replicas: int = 0  # replicas the provider was last asked for
    replicas: tuple[ReplicaStatus, ...] = ()
    # A gateway target for providers that load-balance themselves (a Kubernetes Service); None for local.
    service_url: str | None = None
    rollout_complete: bool = True
    failure: FailureReason | None = None
    pending_reason: str | None = None  # e.g. "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    # Why replicas wait, when the provider knows it for sure (the local provider's capacity check); else from the text.
    pending_cause: FailureReason | None = None
    message: str | None = None  # human detail for failure or pending (last log lines, termination message)

    @property
    def ready_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.ready)


@dataclass(frozen=True)
class SpecNotice:
    """How a provider will run a spec differently from what it says (recorded once per spec revision as an event)."""

    reason: str
    message: str


@runtime_checkable
class Provider(Protocol):
    name: str
    # Whether `running` waits for a health check through the gateway: a local replica is only "ready" by its
    # supervisor's word, a Kubernetes pod's readiness probe has already fetched the health route.
    verify_through_gateway: bool

    def observe(self, key: str) -> ObservedDeployment:
        """Current state of the endpoint's replicas; must be cheap (served from a cache/informer if possible)."""

    def apply(self, desired: DesiredDeployment) -> None:
        """Make the running replicas match `desired`; idempotent; returns without waiting for readiness."""

    def delete(self, key: str) -> None:
        """Remove everything the provider created for `key`; idempotent (deleting nothing is fine)."""

    def logs(self, key: str, *, tail: int = 200, follow: bool = False) -> Iterator[str]:
        """Log lines of the endpoint's replicas, oldest first; `follow` keeps yielding new lines, and an empty string
        now and then while quiet (a heartbeat that lets the consumer notice a departed client)."""

    def list_keys(self) -> list[str]:
        """Keys of every endpoint the provider currently has objects for (to find orphans)."""

    def accelerator_usage(self) -> dict[str, dict[str, int]] | None:
        """`{instance_type: {"allocatable", "used", "max_allocatable_per_node"?, "max_free_per_node"?}}` for the
        catalog's quota and status, or None where the provider cannot tell (the catalog keeps its static figures)."""

    def spec_notices(self, desired: DesiredDeployment) -> list[SpecNotice]:
        """Where this provider runs `desired` differently from what it asks (an image it cannot run, hardware it
        does not have); empty when it runs it as written."""

    def engine(self, desired: DesiredDeployment) -> str:
        """Which engine and image run `desired` (`vLLM vllm/vllm-openai:v0.23.0`), for the status message: the
        variant alone does not say it (a GGUF repository may run llama.cpp, a custom image runs its own)."""
