"""Wire models of the Inference Endpoints v2 API, exactly as huggingface_hub 2.x sends and reads them.

Requests are parsed here for *shape* (a wrong type or bad JSON is a 422); what needs the catalog or the database
(names, replica bounds, hardware) is checked by `controlplane.services.validation` and answered with a 400 that
names the parameter. Responses are built by `endpoint_to_wire` as plain dicts (the hot GET path skips a second
pydantic pass); the `*Public` models below document them in OpenAPI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

DEFAULT_HEALTH_ROUTE = "/health"


class _Wire(BaseModel):
    # Fields a newer client sends that we do not know are ignored, as the hosted API does.
    model_config = ConfigDict(extra="ignore")


class Credentials(_Wire):
    username: str
    password: str | None = None


class ImageVariant(_Wire):
    """One engine's settings. Unlike the rest of the body, unknown fields are kept so validation can name them:
    which fields each variant takes is `common.engines.ENGINES`, and a field the variant does not take is a 422."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    port: int | None = None
    healthRoute: str | None = None
    credentials: Credentials | None = None  # custom
    tensorParallelSize: int | None = None  # vLLM, SGLang
    dataParallelSize: int | None = None  # vLLM
    maxNumSeqs: int | None = None  # vLLM
    maxNumBatchedTokens: int | None = None  # vLLM
    kvCacheDtype: str | None = None  # vLLM
    maxInputLength: int | None = None  # TGI
    maxTotalTokens: int | None = None  # TGI
    maxBatchPrefillTokens: int | None = None  # TGI
    maxBatchTotalTokens: int | None = None  # TGI
    quantize: str | None = None  # TGI
    maxBatchTokens: int | None = None  # TEI
    maxConcurrentRequests: int | None = None  # TEI
    pooling: str | None = None  # TEI
    ctxSize: int | None = None  # llama.cpp: tokens per request
    nParallel: int | None = None  # llama.cpp: concurrent requests
    threadsHttp: int | None = None  # llama.cpp
    embeddings: bool | None = None  # llama.cpp
    modelPath: str | None = None  # llama.cpp: the GGUF file in the repository


class Scaling(_Wire):
    minReplica: int = 1
    maxReplica: int = 1
    scaleToZeroTimeout: int | None = Field(None, description="minutes of idleness before scaling to zero")
    measure: dict[str, FiniteFloat | None] | None = Field(
        None, description='one key: {"pendingRequests": threshold} or {"hardwareUsage": percent}')


class Compute(_Wire):
    accelerator: str
    instanceType: str
    instanceSize: str
    scaling: Scaling = Field(default_factory=Scaling)


class ModelSpec(_Wire):
    repository: str
    revision: str | None = None
    framework: str = "pytorch"
    task: str | None = None
    image: dict[str, ImageVariant] = Field(default_factory=lambda: {"huggingface": ImageVariant()},
                                           description="one-key union: huggingface | custom | tgi | vLLM | ...")
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = Field(None, description="write-only: never returned")


class ProviderSpec(_Wire):
    vendor: str
    region: str


class Route(_Wire):
    domain: str | None = None
    path: str | None = None


EndpointTypeIn = Literal["public", "authenticated", "private", "protected"]


class EndpointCreate(_Wire):
    """POST /v2/endpoint/{namespace}. `type="protected"` (older clients) is stored as `authenticated`."""

    name: str
    type: EndpointTypeIn = "authenticated"
    compute: Compute
    model: ModelSpec
    provider: ProviderSpec
    route: Route | None = None
    tags: list[str] | None = None
    cacheHttpResponses: bool | None = None
    privateService: dict[str, str | None] | None = None


# --- PUT: the same nesting, every field optional; only the fields sent are merged ---------------------------
class ScalingUpdate(_Wire):
    minReplica: int | None = None
    maxReplica: int | None = None
    scaleToZeroTimeout: int | None = None
    measure: dict[str, FiniteFloat | None] | None = None


class ComputeUpdate(_Wire):
    accelerator: str | None = None
    instanceType: str | None = None
    instanceSize: str | None = None
    scaling: ScalingUpdate | None = None


class ModelUpdate(_Wire):
    repository: str | None = None
    revision: str | None = None
    framework: str | None = None
    task: str | None = None
    image: dict[str, ImageVariant] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = None


class ProviderUpdate(_Wire):
    vendor: str | None = None
    region: str | None = None


class EndpointUpdate(_Wire):
    """PUT /v2/endpoint/{namespace}/{name}: merges only the fields sent (image, env, secrets, tags are replaced)."""

    type: EndpointTypeIn | None = None
    compute: ComputeUpdate | None = None
    model: ModelUpdate | None = None
    provider: ProviderUpdate | None = None
    route: Route | None = None
    tags: list[str] | None = None
    cacheHttpResponses: bool | None = None


# --- responses (documentation; bodies are built by endpoint_to_wire) --------------------------------------
class Actor(BaseModel):
    id: str
    name: str


class StatusPublic(BaseModel):
    state: Literal["pending", "initializing", "updating", "updateFailed", "running", "paused", "failed",
                   "scaledToZero"]
    message: str | None
    url: str | None
    private: dict[str, Any] | None
    readyReplica: int
    targetReplica: int
    createdAt: str = Field(description="UTC, ISO 8601 ending in Z")
    updatedAt: str
    createdBy: Actor | None
    updatedBy: Actor | None
    desiredState: Literal["running", "paused", "scaledToZero", "deleted"] = Field(
        description="extension: what was last asked for (the worker moves `state` towards it)")
    generation: int = Field(description="extension: bumped on every change of desired state or spec")
    observedGeneration: int = Field(description="extension: the generation the worker last reconciled")
    conditions: list[dict[str, Any]] = Field(description="extension: {type,status,reason,message,lastTransitionTime}")


class EndpointPublic(BaseModel):
    name: str
    namespace: str
    type: Literal["public", "authenticated", "private"]
    accountId: str | None
    healthRoute: str
    compute: dict[str, Any]
    model: dict[str, Any] = Field(description="as sent, without `secrets` and without registry passwords")
    provider: ProviderSpec
    route: Route | None
    tags: list[str]
    cacheHttpResponses: bool | None
    status: StatusPublic


class EndpointsPublic(BaseModel):
    items: list[EndpointPublic]


class EventPublic(BaseModel):
    id: int
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    createdAt: str


class EventsPublic(BaseModel):
    items: list[EventPublic]
    nextBefore: int | None = Field(description="pass as ?before= to get the next (older) page; null at the end")


class ErrorBody(BaseModel):
    error: str
    param: str | None = None


class WhoAmI(BaseModel):
    type: Literal["user"]
    name: str
    orgs: list[dict[str, str]]
    auth: dict[str, Any] = Field(default_factory=dict)


class TokenCreate(_Wire):
    namespace: str | None = Field(None, description="user namespace the token acts as; default: the caller's own")
    name: str = Field("default", description="a label for the token")
    orgs: list[str] | None = Field(None, description="admin only: organisations the user is made a member of")


class TokenPublic(BaseModel):
    id: int
    name: str
    namespace: str
    prefix: str = Field(description="the first characters of the token, to recognise it")
    createdAt: str
    lastUsedAt: str | None
    revoked: bool


class TokenCreated(TokenPublic):
    token: str = Field(description="the plain token; shown only in this response")


class TokensPublic(BaseModel):
    items: list[TokenPublic]


class NamespaceCreate(_Wire):
    name: str = Field(description="letters, digits, '.', '_' and '-', at most 63 characters")
    kind: Literal["user", "org"] = Field("org", description="org (members' tokens act in it; `POST /api/tokens` with "
                                         "orgs adds members) or user (its own tokens act in it)")


class NamespacePublic(BaseModel):
    name: str
    kind: Literal["user", "org"]


class NamespacesPublic(BaseModel):
    items: list[NamespacePublic]


# --- helpers ------------------------------------------------------------------------------------------------
def iso_z(value: datetime | None) -> str | None:
    """UTC with millisecond precision and a trailing Z, the only form huggingface_hub's parser accepts."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def endpoint_to_wire(row: Any) -> dict[str, Any]:
    """The endpoint object huggingface_hub parses (every key it reads is present). Never includes secrets."""
    spec = row.spec
    actor_c = {"id": row.created_by, "name": row.created_by} if row.created_by else None
    actor_u = {"id": row.updated_by, "name": row.updated_by} if row.updated_by else None
    return {
        "name": row.name,
        "namespace": row.namespace,
        "type": row.type,
        "accountId": None,
        "healthRoute": spec.get("healthRoute") or DEFAULT_HEALTH_ROUTE,
        "compute": spec["compute"],
        "model": spec["model"],
        "provider": spec["provider"],
        "route": spec.get("route"),
        "tags": spec.get("tags") or [],
        "cacheHttpResponses": spec.get("cacheHttpResponses"),
        "status": {
            "state": row.state,
            "message": row.message,
            "url": row.url,
            "private": None,
            "readyReplica": row.ready_replicas or 0,
            "targetReplica": row.target_replicas or 0,
            "createdAt": iso_z(row.created_at),
            "updatedAt": iso_z(row.updated_at),
            "createdBy": actor_c,
            "updatedBy": actor_u,
            "desiredState": row.desired_state,
            "generation": row.generation,
            "observedGeneration": row.observed_generation,
            "conditions": row.conditions or [],
        },
    }
