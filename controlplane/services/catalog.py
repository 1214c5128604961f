"""Model-catalog use cases: list it, deploy a recipe, and recommend an instance for any repository.

A deploy is a create: the recipe becomes the very `EndpointCreate` body a client would send, and goes through
`EndpointService.create` (namespace check, validation, quota, the reconcile hand-off), so a catalog endpoint is an
ordinary endpoint afterwards. The recommendation reads the repository's `config.json` — a local snapshot directory
on the local provider (which serves such directories), else the Hub through huggingface_hub with the operator's
`HF_ENDPOINT` / `HF_TOKEN` — and leaves the arithmetic to `controlplane.services.sizing`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from common.catalog import Catalog
from common.config import Settings
from common.errors import CatalogError, Forbidden, InvalidSpec, NotFound, ServiceUnavailable
from common.model_catalog import CatalogFilter, CatalogModel, ModelCatalog, Recipe
from common.models import Endpoint
from controlplane.catalog_schemas import CatalogDeploy
from controlplane.schemas import EndpointCreate
from controlplane.services import sizing
from controlplane.services.endpoints import EndpointService
from controlplane.services.validation import MAX_NAME, SpecLimits, validate_create

MAX_CONFIG_BYTES = 1024 * 1024  # a config.json is a few KiB; anything this large is not one
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
HUB_TIMEOUT = 5.0  # seconds for the Hub's answer: an API request waits on it


def recipe_body(model: CatalogModel, recipe: Recipe, name: str) -> EndpointCreate:
    """The create body a recipe stands for."""
    try:
        return EndpointCreate.model_validate({
            "name": name,
            "type": "authenticated",
            "compute": {"accelerator": recipe.accelerator, "instanceType": recipe.instanceType,
                        "instanceSize": recipe.instanceSize, "scaling": recipe.scaling.model_dump()},
            "model": {"repository": recipe.repository or model.repoId, "revision": recipe.revision,
                      "framework": model.framework, "task": model.task,
                      "image": {recipe.variant: recipe.image_settings()},
                      "env": dict(recipe.env) or None, "secrets": dict(recipe.secrets) or None},
            "provider": {"vendor": recipe.vendor, "region": recipe.region},
        })
    except ValidationError as exc:  # the catalog file's types are checked at load: only a schema change gets here
        raise InvalidSpec(f"recipe {recipe.id}: {exc.errors()[0]['msg']}", param="recipe") from None


def check_recipes(models: ModelCatalog, hardware: Catalog, limits: SpecLimits) -> None:
    """At start-up: every recipe passes the validation a create of it would (env policy, engine settings, the
    hardware), so a bad operator file stops the control plane with the reason instead of failing deploys."""
    for model in models.models:
        for recipe in model.recipes:
            try:
                validate_create(recipe_body(model, recipe, "catalog-check"), hardware, limits)
            except InvalidSpec as exc:
                raise CatalogError(f"invalid model catalog: recipe {recipe.id} ({model.repoId}) would be refused: "
                                   f"{exc.message}") from exc


def generated_name(model: CatalogModel) -> str:
    """`<model name>-<6 random characters>`, as the hosted catalog names endpoints it was not given a name for."""
    stem = re.sub(r"[^a-z0-9]+", "-", model.name.lower()).strip("-")[:MAX_NAME - 7].strip("-") or "endpoint"
    suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
    return f"{stem}-{suffix}"


@dataclass
class CatalogService:
    settings: Settings
    models: ModelCatalog
    hardware: Catalog
    # A factory: listing and recommending never need the database session an EndpointService opens.
    endpoints: Callable[[], EndpointService]

    # --- list --------------------------------------------------------------------------------------------
    def list(self, where: CatalogFilter, *, limit: int | None) -> list[dict[str, Any]]:
        return [model.to_wire(recipes) for model, recipes in self.models.list(where, limit=limit)]

    # --- deploy ------------------------------------------------------------------------------------------
    def deploy_recipe(self, recipe_id: str, request: CatalogDeploy) -> Endpoint:
        found = self.models.recipe(recipe_id)
        if found is None:
            raise NotFound(f"recipe {recipe_id[:64]!r} not found in the catalog")
        if request.accelerator is not None or request.ggufFile is not None:
            raise InvalidSpec("accelerator and ggufFile pick one of a model's recipes; a recipe id already is one",
                              param="accelerator" if request.accelerator is not None else "ggufFile")
        model, recipe = found
        return self._deploy(model, recipe, request)

    def deploy_model(self, repo_id: str, request: CatalogDeploy) -> Endpoint:
        model = self.models.model(repo_id)
        if model is None:
            raise NotFound(f"{repo_id[:200]!r} is not in the catalog (`endpointctl catalog` lists it)")
        return self._deploy(model, self._pick(model, request), request)

    def _pick(self, model: CatalogModel, request: CatalogDeploy) -> Recipe:
        """The model's first recipe matching the request that the hardware here can run; else the first matching
        one, whose create then says why it cannot run."""
        accelerator = request.accelerator.lower() if request.accelerator else None
        matching = [r for r in model.recipes
                    if (accelerator is None or r.accelerator == accelerator)
                    and (request.ggufFile is None or r.ggufFile == request.ggufFile)]
        if not matching:
            param = "ggufFile" if request.ggufFile is not None else "accelerator"
            offered = ", ".join(f"{r.id} ({r.accelerator}{', ' + r.ggufFile if r.ggufFile else ''})"
                                for r in model.recipes)
            raise InvalidSpec(f"{model.repoId} has no recipe for that {param}; its recipes: {offered}", param=param)
        for recipe in matching:
            try:
                self.hardware.resolve(vendor=recipe.vendor, region=recipe.region, instance_type=recipe.instanceType,
                                      instance_size=recipe.instanceSize, accelerator=recipe.accelerator)
            except InvalidSpec:
                continue
            return recipe
        return matching[0]

    def _deploy(self, model: CatalogModel, recipe: Recipe, request: CatalogDeploy) -> Endpoint:
        # The namespace first: a caller learns nothing about names before it is known to hold the namespace.
        endpoints = self.endpoints()
        endpoints.authorize(request.namespace)
        name = request.config.name if request.config and request.config.name is not None else generated_name(model)
        return endpoints.create(request.namespace, recipe_body(model, recipe, name))

    # --- recommend ---------------------------------------------------------------------------------------
    def recommend(self, repository: str, *, revision: str | None, context: int | None, concurrency: int,
                  dtype: str | None, accelerator: str | None, vendor: str | None,
                  region: str | None) -> dict[str, Any]:
        config = self._read_config(repository, revision)
        shape = sizing.ModelShape.from_config(config, dtype=dtype)
        if context is None:
            context = shape.max_context or 4096
        elif shape.max_context is not None and context > shape.max_context:
            raise InvalidSpec(f"context {context} is longer than the model's {shape.max_context} tokens "
                              f"(max_position_embeddings)", param="context")
        memory = sizing.need(shape, context=context, concurrency=concurrency)
        candidates, refused = self._candidates(accelerator=accelerator, vendor=vendor, region=region)
        chosen = sizing.smallest(candidates, memory.total)
        largest = max(candidates, key=lambda c: sizing.capacity_bytes(c.instance) or 0.0, default=None)
        lines = sizing.arithmetic(shape, memory, context=context, concurrency=concurrency, chosen=chosen,
                                  largest=largest)
        if chosen is None and refused:
            # Say why the bigger instances were not candidates (a GPU the local machine lacks, say).
            lines.append(f"left out, as a create here would refuse them: {len(refused)} instances, e.g. {refused[0]}")
        answer: dict[str, Any] = {
            "repository": repository, "revision": revision, "context": context, "concurrency": concurrency,
            "model": {"modelType": shape.model_type, "parameters": shape.parameters, "dtype": shape.dtype,
                      "bytesPerParameter": shape.dtype_bytes, "layers": shape.layers, "hiddenSize": shape.hidden,
                      "attentionHeads": shape.heads, "kvHeads": shape.kv_heads, "headDim": shape.head_dim,
                      "maxContext": shape.max_context},
            "memory": {"weightsBytes": round(memory.weights), "kvBytesPerToken": round(shape.kv_bytes_per_token),
                       "kvCacheBytes": round(memory.kv), "overheadBytes": round(memory.overhead),
                       "neededBytes": round(memory.total)},
            "instance": None, "arithmetic": lines,
        }
        if chosen is not None:
            inst = chosen.instance
            answer["instance"] = {"id": inst.id, "vendor": chosen.vendor, "region": chosen.region,
                                  "accelerator": inst.accelerator, "instanceType": inst.instanceType,
                                  "instanceSize": inst.instanceSize, "memoryGb": inst.memoryGb,
                                  "gpuMemoryGb": inst.gpuMemoryGb, "pricePerHour": inst.pricePerHour}
        return answer

    def _candidates(self, *, accelerator: str | None, vendor: str | None,
                    region: str | None) -> tuple[list[sizing.Candidate], list[str]]:
        """Instances a create here would accept, and the reasons the others would be refused. Without a vendor: on
        the local provider the `local` vendor (every instance runs on this machine), elsewhere every vendor but
        `local`."""
        local = self.settings.provider == "local"
        found = []
        refused: list[str] = []
        for v in self.hardware.vendors:
            if vendor is not None and v.name != vendor:
                continue
            if vendor is None and (v.name == "local") != local:
                continue
            for r in v.regions:
                if region is not None and r.name != region:
                    continue
                for inst in r.computes:
                    if (accelerator is not None and inst.accelerator != accelerator) or inst.status == "deprecated":
                        continue
                    try:
                        self.hardware.resolve(vendor=v.name, region=r.name, instance_type=inst.instanceType,
                                              instance_size=inst.instanceSize)
                    except InvalidSpec as exc:
                        refused.append(exc.message)
                        continue
                    found.append(sizing.Candidate(vendor=v.name, region=r.name, instance=inst))
        return found, refused

    def _read_config(self, repository: str, revision: str | None) -> Any:
        if revision is not None and (not REVISION_RE.fullmatch(revision) or ".." in revision):
            raise InvalidSpec("revision must be a branch, tag or commit (letters, digits, '.', '_', '-', '/')",
                              param="revision")
        if repository.startswith("/"):
            return self._read_local(repository)
        return self._read_hub(repository, revision)

    def _read_local(self, repository: str) -> Any:
        """`<dir>/config.json` of a snapshot directory. Only the local provider loads models from directories, so
        only there is one read; the path must be absolute and plain (no '..'), and only numbers derived from the
        file are answered."""
        if self.settings.provider != "local":
            raise InvalidSpec("a local directory is only read on the local provider; name a Hub repository "
                              "(owner/name)", param="repository")
        path = PurePosixPath(repository)
        if ".." in path.parts or "\x00" in repository:
            raise InvalidSpec("repository: a local directory must be an absolute path without '..'",
                              param="repository")
        config = Path(path) / "config.json"
        try:
            with config.open("rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no config.json in {repository[:200]} (a GGUF-only directory has none: pass a repository "
                           "with a config.json)") from None
        except OSError as exc:
            raise NotFound(f"cannot read config.json in {repository[:200]}: {exc.strerror}") from None
        return _parse_config(raw)

    def _read_hub(self, repository: str, revision: str | None) -> Any:
        """One GET of the file's resolve URL, built by huggingface_hub (`hf_hub_url`, `build_hf_headers`: the
        operator's endpoint and token), sent with httpx under one short timeout. Not `hf_hub_download`: it retries
        an unreachable Hub with backoff for ~20 s, and an API request (one of a thread pool's threads) would wait on
        every retry; a config.json is small enough not to need its cache either."""
        import httpx
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import build_hf_headers, validate_repo_id

        try:
            validate_repo_id(repository)
        except HFValidationError:
            raise InvalidSpec("repository must be a Hub repository id (owner/name) or, on the local provider, an "
                              "absolute directory", param="repository") from None
        url = hf_hub_url(repository, "config.json", revision=revision, endpoint=self.settings.hub_endpoint)
        headers = build_hf_headers(token=self.settings.hub_token or False)
        where = f"{repository}{' at ' + revision if revision else ''}"
        try:
            with httpx.Client(timeout=HUB_TIMEOUT, follow_redirects=True) as client, \
                    client.stream("GET", url, headers=headers) as response:
                if response.status_code < 400:
                    raw = b""
                    for chunk in response.iter_bytes():
                        raw += chunk
                        if len(raw) > MAX_CONFIG_BYTES:
                            break
                    return _parse_config(raw)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the Hub is not reachable from the control plane (HF_ENDPOINT): "
                                     f"{type(exc).__name__} fetching {repository}'s config.json") from None
        code = response.headers.get("x-error-code", "")
        if code == "GatedRepo":
            raise Forbidden(f"{repository} is gated and the control plane's hub token (HF_TOKEN) has no access "
                            "to it")
        if response.status_code in (401, 404) or code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound"):
            # The Hub answers 401 for a repository that does not exist or that the token cannot see.
            raise NotFound(f"no config.json in {where} on the Hub")
        raise ServiceUnavailable(f"the Hub answered {response.status_code} for {repository}'s config.json")


def _parse_config(raw: bytes) -> Any:
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidSpec("config.json is larger than 1 MiB: not a model configuration", param="repository")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidSpec("config.json is not valid JSON", param="repository") from None
