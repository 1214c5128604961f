"""One Settings object for every process of the control plane (API, gateway, worker, beat).

The API and the worker must agree on the database, the broker and the data directory, so they read the same
environment variables; names follow the ecosystem (DATABASE_URL, REDIS_URL) and ours carry ENDPOINTCTL_.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "endpointctl"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENDPOINTCTL_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Ecosystem names, read without our prefix.
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "ENDPOINTCTL_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ENDPOINTCTL_REDIS_URL"))

    # Bootstrap admin: its token owns the admin namespace.
    admin_token: str | None = None
    admin_namespace: str = "admin"
    # Fernet keys for model secrets and registry credentials at rest (common/crypto.py); comma-separated,
    # the first encrypts. Unset: a key generated 0600 in the data directory.
    secrets_key: str | None = None

    # Public base URL of this control plane (the gateway builds endpoint URLs from it); empty = from the request.
    public_url: str | None = None
    # Hardware catalog override (a YAML file in the shipped format).
    hardware_catalog: Path | None = None
    # Model catalog override (common/model_catalog.py; a YAML file in the shipped format of common/data/models.yaml).
    model_catalog: Path | None = None
    # Provider the worker drives: "local" (processes on this machine) or "kubernetes".
    provider: str = "local"
    # Local provider: the command that runs one replica (default: the bundled runtime, `python -I -u -m runtime`).
    local_runtime_command: str | None = None
    # Local provider capacity (worker/providers/capacity.py): each replica holds this CPU share and needs this memory
    # (unset: 1 GiB + 1.5 x the model's weights on disk); replicas that do not fit wait with "not enough capacity".
    local_replica_cpus: float = Field(default=0.5, ge=0.0)
    local_replica_memory_gb: float | None = Field(default=None, ge=0.0)
    local_reserve_cpus: float = Field(default=0.0, ge=0.0)
    local_reserve_memory_gb: float = Field(default=1.0, ge=0.0)
    # Local provider on a machine without a GPU: accept GPU instance types and run them on the CPU (tests, demos);
    # off, such a request is refused at create time with the reason (common/catalog.py).
    local_gpu_emulation: bool = False
    # Apply pending Alembic migrations when the API starts.
    migrate_on_start: bool = True

    # Gateway: how long a request to a scaled-to-zero endpoint is held by default (seconds).
    scale_up_timeout: float = 120.0
    # Networks whose clients may call `private` endpoints (the host itself; add the cluster's pod CIDR in k8s).
    private_networks: str = "127.0.0.0/8,::1/128"

    # --- Gateway request bodies (controlplane/gateway/proxy.py) ---------------------------------------------
    # Largest request body the gateway forwards to a replica (bytes): a larger Content-Length is answered 413
    # before any of the body is read, a chunked body as soon as it passes the limit. Default: the bundled runtime's
    # PAYLOAD_LIMIT (runtime/config.py), so the gateway never streams what the replica would refuse.
    gateway_payload_limit: int = Field(default=2_000_000, ge=1)
    # --- Gateway replica choice (controlplane/gateway/routing.py) --------------------------------------------
    # Requests whose prompts start alike go to the same replica (its prefix cache holds that start) until it
    # carries more than load_factor × the average in flight; off: least outstanding requests only. 1.5 rather
    # than the usual 1.25: a request sent away from its prefix pays a whole prefill, an uneven load only some
    # queueing (with two replicas one may carry up to three quarters of the requests). bench/prefix_routing.py
    # --load-factor measures the trade-off.
    gateway_prefix_routing: bool = True
    gateway_prefix_load_factor: float = Field(default=1.5, ge=1.0, le=10.0)
    # Requests in flight per replica through one gateway process; beyond it requests queue in the gateway, up
    # to queue_size per endpoint and queue_timeout seconds, then 503 with Retry-After. Default: the bundled
    # runtime's MAX_CONCURRENT_REQUESTS, over which a replica answers 429.
    gateway_replica_max_inflight: int = Field(default=128, ge=1)
    gateway_queue_timeout: float = Field(default=30.0, ge=0.0, le=3600.0)
    gateway_queue_size: int = Field(default=1024, ge=0)

    # --- Authentication (controlplane/auth.py) --------------------------------------------------------------
    # How long any process may trust a token it looked up. Revoking a token waits this long before it returns, so
    # that no process (API replicas, gateway) still accepts it afterwards. 0: every request asks the database.
    # Every process must share the value.
    token_cache_seconds: float = Field(default=1.0, ge=0.0, le=30.0)
    # Bearer token that reads /metrics and nothing else (Prometheus' scrape token); unset: only the admin token.
    metrics_token: str | None = None
    # Dashboard sign-in (controlplane/auth.py, session cookie): how long a session lasts before the token must be
    # given again, and whether the cookie is `Secure` (unset: when the request came over https).
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    session_cookie_secure: bool | None = None
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto the API believes (uvicorn's forwarded_allow_ips):
    # comma-separated addresses or networks, "*" for any. Empty (default): none; the TCP peer is the client.
    forwarded_allow_ips: str = ""

    @field_validator("metrics_token")
    @classmethod
    def _strong_metrics_token(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value) < 16 or not value.isascii() or not value.isprintable():
            raise ValueError("ENDPOINTCTL_METRICS_TOKEN must be at least 16 printable ASCII characters")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item and item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"ENDPOINTCTL_FORWARDED_ALLOW_IPS: {item!r} is not an address or a network"
                                     ) from None
        return value

    @property
    def trusted_proxies(self) -> list[str]:
        return [part.strip() for part in self.forwarded_allow_ips.split(",") if part.strip()]

    # Tenant limits (controlplane/services/validation.py, quota.py): answered with 422 or 403 naming the limit.
    max_replicas: int = 100  # maxReplica of one endpoint
    max_env_entries: int = 128  # model.env + model.secrets variables
    max_env_bytes: int = 64 * 1024  # their names and values together
    max_args_entries: int = 256  # model.command + model.args items
    max_args_bytes: int = 16 * 1024
    max_private_service_bytes: int = 4 * 1024
    max_endpoints_per_namespace: int = 200
    # Accelerators a namespace's endpoints may hold at their maxReplica (catalog numAccelerators x maxReplica).
    max_accelerators_per_namespace: int = 256

    # Worker periodic tasks (seconds).
    resync_interval: float = 30.0
    idle_check_interval: float = 15.0
    autoscale_interval: float = 10.0
    capacity_interval: float = 15.0
    # A worker that receives nothing for this long with a free slot (not even its own probe) exits so its
    # supervisor restarts it: Celery's Redis consumer can stall for good after a broker restart. 0 disables.
    worker_stall_timeout: float = 60.0
    # Autoscaler: scale down only to the highest recommendation seen within this window (seconds), so it won't flap.
    scale_down_window: float = 120.0
    # Dashboard charts: the worker samples each endpoint's replicas this often and keeps this much history.
    metrics_interval: float = Field(default=10.0, ge=1.0, le=600.0)
    metrics_retention: float = Field(default=3900.0, ge=60.0, le=86_400.0)

    # --- Kubernetes provider (ENDPOINTCTL_PROVIDER=kubernetes) ----------------------------------------------
    # Cluster access: KUBECONFIG (standard name) or, when unset and running in a pod, the in-cluster config.
    kubeconfig: Path | None = Field(default=None, validation_alias=AliasChoices("KUBECONFIG", "ENDPOINTCTL_KUBECONFIG"))
    k8s_context: str | None = None
    # Namespace holding every endpoint's Deployment/Service/Secret (created if the credentials may).
    k8s_namespace: str = "endpointctl-endpoints"
    k8s_field_manager: str = "endpointctl"
    # Bundled runtime image; a custom image `url` in the endpoint spec replaces it.
    k8s_runtime_image: str = "ghcr.io/endpointctl/runtime:0.1.0"
    # Image of the init container that downloads the model snapshot (default: the runtime image, which ships `hf`).
    k8s_downloader_image: str | None = None
    k8s_image_pull_secrets: list[str] = Field(default_factory=list)  # JSON list of Secret names
    k8s_image_pull_policy: str = "IfNotPresent"
    # Model cache: emptyDir when no storage class is set, else a per-pod ephemeral PVC of this class and size.
    k8s_storage_class: str | None = None
    k8s_model_cache_size: str = "100Gi"
    k8s_shm_size: str = "1Gi"
    k8s_extra_labels: dict[str, str] = Field(default_factory=dict)  # JSON objects
    k8s_extra_annotations: dict[str, str] = Field(default_factory=dict)
    k8s_tolerations: list[dict] = Field(default_factory=list)  # extra pod tolerations (JSON list)
    # Seconds a pod stays on a NotReady/unreachable node before it is evicted and rescheduled.
    k8s_node_failure_toleration_seconds: int = 60
    # Slow model loads: the startup probe allows this long before the kubelet restarts the container, and a
    # rollout that makes no progress for `k8s_progress_deadline_seconds` is reported as updateFailed.
    k8s_startup_timeout_seconds: int = 1800
    k8s_progress_deadline_seconds: int = 2400
    # Pods request this share of the catalog instance's CPUs/memory: a node of that size never has all of it
    # allocatable (kubelet and system reservations), so requesting 100% would never schedule.
    k8s_resource_request_fraction: float = 0.8
    # Readiness already is the kubelet's probe of the health route; probing again through the gateway needs the
    # gateway to reach Services (it runs in the cluster). Off by default.
    k8s_verify_through_gateway: bool = False
    # Engine images for variants sent without a `url`, by engine (vllm, sglang, llamacpp, llamacpp-cpu, tgi, tei;
    # JSON object); unset engines use worker/engines.py's pinned defaults.
    k8s_engine_images: dict[str, str] = Field(default_factory=dict)
    # A GGUF repository with the default image runs this llama.cpp server image instead of the bundled runtime
    # (ENDPOINTCTL_GGUF_IMAGE, e.g. ghcr.io/ggml-org/llama.cpp:server-cuda); unset: the runtime serves GGUF itself.
    gguf_image: str | None = None
    # Hub access for the download init container (put into the endpoint's Secret, never into the pod spec).
    hub_token: str | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "ENDPOINTCTL_HUB_TOKEN"))
    hub_endpoint: str | None = Field(default=None, validation_alias=AliasChoices("HF_ENDPOINT", "ENDPOINTCTL_HUB_ENDPOINT"))

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common "postgresql://" / "postgres://" spellings and use psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix):]
            return url
        return f"sqlite:///{self.data_dir / 'endpointctl.db'}"

    @property
    def broker_url(self) -> str:
        """Redis in production; kombu's SQLAlchemy transport on SQLite when no broker server is configured."""
        if self.redis_url:
            return self.redis_url
        return f"esqla+sqlite:///{self.data_dir / 'broker.db'}"


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
