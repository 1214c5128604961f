"""The model catalog: curated repositories, each with tested *recipes* (engine, instance, settings, scaling).

Loaded from the YAML shipped in `common/data/models.yaml`, or from `ENDPOINTCTL_MODEL_CATALOG` (same format), as the
hardware catalog is. The control plane serves it at `/api/v1/catalog` — the path Hugging Face serves its Inference
Catalog at — so huggingface_hub's `list_inference_catalog` and `create_inference_endpoint_from_catalog` work against
us once `constants.INFERENCE_CATALOG_ENDPOINT` points here.

A bad operator file must stop the start-up, not surface as a 400 on the first deploy: the file is parsed with
pydantic (unknown keys refused), and every recipe is checked against the hardware catalog (the instance exists, its
accelerator is the recipe's) and against the engine's documented settings (`common.engines`). The control plane
then runs each recipe through the same validation a create goes through (`controlplane.services.catalog`).

Recipes name engines as the catalog's wire does (`engineType`: `vllm`, `tgi`, `llamacpp`, ...); `ENGINE_VARIANTS`
maps them onto our `model.image` variants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.catalog import Catalog
from common.engines import ENGINES, unknown_settings
from common.errors import CatalogError

# The catalog's engine names (huggingface_hub's `engineType`) → our image variants (`common.engines.ENGINES`).
ENGINE_VARIANTS: dict[str, str] = {
    "huggingface": "huggingface",
    "vllm": "vLLM",
    "sglang": "sGLang",
    "tgi": "tgi",
    "tei": "tei",
    "llamacpp": "llamacpp",
}
assert set(ENGINE_VARIANTS.values()) <= set(ENGINES), "every catalog engine must be an image variant"

RECIPE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]")
# A Hub repository id as huggingface_hub accepts it (`validate_repo_id`): owner/name of word characters, '-', '.'.
REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


class Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minReplica: int = Field(1, ge=0)
    maxReplica: int = Field(1, ge=1)
    scaleToZeroTimeout: int | None = Field(None, ge=1, description="minutes")


class Recipe(BaseModel):
    """One tested way to deploy a model. `env` is visible on the endpoint; `secrets` are write-only there too, and
    neither is ever listed."""

    model_config = ConfigDict(extra="forbid")

    id: str
    engine: str
    accelerator: Literal["cpu", "gpu", "neuron"]
    vendor: str
    region: str
    instanceType: str
    instanceSize: str
    image: dict[str, Any] = Field(default_factory=dict, description="the engine's settings (model.image.<variant>)")
    ggufFile: str | None = None
    revision: str | None = None
    # The repository the endpoint is created with when it is not the catalog's repo id: a mirror, or a local
    # snapshot directory on the local provider (the Hub is not reachable from every machine).
    repository: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    scaling: Scaling = Field(default_factory=Scaling)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not RECIPE_ID_RE.fullmatch(value):
            raise ValueError("a recipe id is 2-64 characters of a-z, 0-9 and '-', starting and ending with a letter "
                             "or digit")
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ENGINE_VARIANTS:
            raise ValueError(f"unknown engine {value!r}; valid engines: {', '.join(ENGINE_VARIANTS)}")
        return value

    @model_validator(mode="after")
    def _settings(self) -> Recipe:
        unknown = unknown_settings(self.variant, set(self.image))
        if unknown:
            raise ValueError(f"engine {self.engine} takes no setting {unknown[0]!r}")
        if self.ggufFile is not None and self.engine != "llamacpp":
            raise ValueError("ggufFile is for llamacpp recipes only")
        if self.engine == "llamacpp" and not (self.ggufFile or self.image.get("modelPath")):
            raise ValueError("a llamacpp recipe names its GGUF file (ggufFile)")
        if self.scaling.minReplica > self.scaling.maxReplica:
            raise ValueError("scaling.minReplica is above scaling.maxReplica")
        return self

    @property
    def variant(self) -> str:
        return ENGINE_VARIANTS[self.engine]

    def image_settings(self) -> dict[str, Any]:
        """`model.image.<variant>`: the recipe's settings, and its GGUF file as llama.cpp's `modelPath`."""
        settings = dict(self.image)
        if self.ggufFile and "modelPath" not in settings:
            settings["modelPath"] = self.ggufFile
        return settings

    def to_wire(self) -> dict[str, Any]:
        """A recipe as huggingface_hub's `InferenceCatalogRecipe.from_raw` reads it, plus where it runs. No env, no
        secrets, no repository override: those are the operator's, and a listing is for every tenant."""
        return {"publicId": self.id, "accelerator": self.accelerator, "engineType": self.engine,
                "ggufFile": self.ggufFile, "revision": self.revision, "vendor": self.vendor, "region": self.region,
                "instanceType": self.instanceType, "instanceSize": self.instanceSize}


class CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repoId: str
    license: str
    task: str
    framework: str = "pytorch"
    createdAt: datetime
    recipes: list[Recipe] = Field(min_length=1)

    @field_validator("repoId")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if not REPO_ID_RE.fullmatch(value) or ".." in value or "--" in value:
            raise ValueError(f"{value!r} is not a Hub repository id (owner/name)")
        return value

    @field_validator("createdAt")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @property
    def author(self) -> str:
        return self.repoId.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repoId.split("/", 1)[1]

    def to_wire(self, recipes: list[Recipe] | None = None) -> dict[str, Any]:
        """A catalog item as `InferenceCatalogModel.from_raw` reads it."""
        created = self.createdAt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"repoId": self.repoId, "modelName": self.name, "authorName": self.author, "license": self.license,
                "task": self.task, "createdAt": created,
                "recipes": [r.to_wire() for r in (self.recipes if recipes is None else recipes)]}


class ModelCatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[CatalogModel]


@dataclass(frozen=True)
class CatalogFilter:
    """The filters `list_inference_catalog` sends; a model matches when one of its recipes does."""

    accelerator: str | None = None
    engine: str | None = None
    license: str | None = None
    task: str | None = None
    search: str | None = None

    def recipe_matches(self, recipe: Recipe) -> bool:
        return ((self.accelerator is None or recipe.accelerator == self.accelerator.lower())
                and (self.engine is None or recipe.engine == self.engine.lower()))

    def model_matches(self, model: CatalogModel) -> bool:
        return ((self.license is None or model.license.casefold() == self.license.casefold())
                and (self.task is None or model.task == self.task)
                and (self.search is None or self.search.casefold() in model.repoId.casefold()))


@dataclass(frozen=True)
class ModelCatalog:
    models: tuple[CatalogModel, ...]

    def list(self, where: CatalogFilter, *, limit: int | None = None) -> list[tuple[CatalogModel, list[Recipe]]]:
        """Matching models in catalog order, each with its matching recipes (all of them when no recipe filter)."""
        found = []
        for model in self.models:
            if not where.model_matches(model):
                continue
            recipes = [r for r in model.recipes if where.recipe_matches(r)]
            if recipes:
                found.append((model, recipes))
            if limit is not None and len(found) >= limit:
                break
        return found

    def model(self, repo_id: str) -> CatalogModel | None:
        return next((m for m in self.models if m.repoId.casefold() == repo_id.casefold()), None)

    def recipe(self, recipe_id: str) -> tuple[CatalogModel, Recipe] | None:
        for model in self.models:
            for recipe in model.recipes:
                if recipe.id == recipe_id:
                    return model, recipe
        return None


def check_against_hardware(catalog: ModelCatalog, hardware: Catalog, *, source: str) -> None:
    """Every recipe names an instance of the hardware catalog, with that instance's accelerator."""
    for model in catalog.models:
        for recipe in model.recipes:
            inst = hardware.lookup(recipe.vendor, recipe.region, recipe.instanceType, recipe.instanceSize)
            where = f"{recipe.vendor}/{recipe.region} {recipe.instanceType} {recipe.instanceSize}"
            if inst is None:
                raise CatalogError(f"invalid model catalog {source}: recipe {recipe.id} ({model.repoId}) names "
                                   f"{where}, which the hardware catalog does not have")
            if inst.accelerator != recipe.accelerator:
                raise CatalogError(f"invalid model catalog {source}: recipe {recipe.id} says accelerator "
                                   f"{recipe.accelerator!r} but {where} is {inst.accelerator!r}")


def fit_to_hardware(catalog: ModelCatalog, hardware: Catalog) -> ModelCatalog:
    """The recipes whose instance this hardware catalog has, with that accelerator; models left without one go.

    For the shipped default only: its recipes name the shipped hardware catalog's instances, and an operator who
    replaced the hardware catalog (an on-premises cluster's GPUs) should get the default models that fit it rather
    than a start-up failure over instances they never had. An operator's own model catalog is checked strictly."""
    kept = []
    for model in catalog.models:
        recipes = [r for r in model.recipes
                   if (inst := hardware.lookup(r.vendor, r.region, r.instanceType, r.instanceSize)) is not None
                   and inst.accelerator == r.accelerator]
        if recipes:
            kept.append(model.model_copy(update={"recipes": recipes}))
    return ModelCatalog(models=tuple(kept))


def parse_model_catalog(text: str, *, hardware: Catalog, source: str = "<model catalog>",
                        strict: bool = True) -> ModelCatalog:
    try:
        data = ModelCatalogFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise CatalogError(f"invalid model catalog {source}: {exc}") from exc
    seen: dict[str, str] = {}
    repos: set[str] = set()
    for model in data.models:
        if model.repoId.casefold() in repos:
            raise CatalogError(f"invalid model catalog {source}: {model.repoId} is listed twice")
        repos.add(model.repoId.casefold())
        for recipe in model.recipes:
            if recipe.id in seen:
                raise CatalogError(f"invalid model catalog {source}: recipe id {recipe.id} is used by "
                                   f"{seen[recipe.id]} and {model.repoId}")
            seen[recipe.id] = model.repoId
    catalog = ModelCatalog(models=tuple(data.models))
    if not strict:
        return fit_to_hardware(catalog, hardware)
    check_against_hardware(catalog, hardware, source=source)
    return catalog


def load_model_catalog(path: Path | None, hardware: Catalog) -> ModelCatalog:
    """The catalog at `path`, checked against `hardware`, or the shipped default fitted to it (read once, at
    start-up)."""
    if path is None:
        text = resources.files("common").joinpath("data/models.yaml").read_text()
        return parse_model_catalog(text, hardware=hardware, source="(shipped default)", strict=False)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read model catalog {path}: {exc}") from exc
    return parse_model_catalog(text, hardware=hardware, source=str(path))
