"""`/api/v1/catalog/...`: the model catalog at the path huggingface_hub's `INFERENCE_CATALOG_ENDPOINT` names
(`/list`, `/model/{repo}/deploy`, `/recipe/{id}/deploy`), plus `/recommend`, the instance a repository needs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from common.model_catalog import CatalogFilter
from controlplane.api.deps import ContextDep
from controlplane.api.responses import FastJSONResponse
from controlplane.catalog_schemas import CatalogDeploy
from controlplane.schemas import ErrorBody, endpoint_to_wire

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 503)}
MAX_LIMIT = 1000
router = APIRouter(prefix="/api/v1/catalog", tags=["catalog"], responses=ERRORS)

Filter = Annotated[str | None, Query(max_length=256)]


@router.get("/list", summary="Catalog models with their recipes (huggingface_hub's list_inference_catalog)")
def read_catalog(ctx: ContextDep, accelerator: Filter = None, engine: Filter = None, license: Filter = None,
                 task: Filter = None, search: Filter = None,
                 limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None) -> FastJSONResponse:
    where = CatalogFilter(accelerator=accelerator, engine=engine, license=license, task=task, search=search)
    return FastJSONResponse({"items": ctx.catalog_service().list(where, limit=limit)})


@router.post("/model/{repo_id:path}/deploy", status_code=201,
             summary="Deploy a catalog model's default recipe (narrowed by accelerator, ggufFile)")
def deploy_catalog_model(repo_id: str, body: CatalogDeploy, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        row = ctx.catalog_service().deploy_model(repo_id, body)
        return FastJSONResponse({"endpoint": endpoint_to_wire(row)}, status_code=201)


@router.post("/recipe/{recipe_id}/deploy", status_code=201, summary="Deploy one catalog recipe")
def deploy_catalog_recipe(recipe_id: str, body: CatalogDeploy, ctx: ContextDep) -> FastJSONResponse:
    with ctx:
        row = ctx.catalog_service().deploy_recipe(recipe_id, body)
        return FastJSONResponse({"endpoint": endpoint_to_wire(row)}, status_code=201)


@router.get("/recommend", summary="The smallest instance that holds a repository's weights and KV cache, with the "
                                  "arithmetic")
def read_recommendation(
    ctx: ContextDep,
    repository: Annotated[str, Query(min_length=1, max_length=1024,
                                     description="a Hub repository (owner/name), or on the local provider an "
                                                 "absolute snapshot directory")],
    revision: Annotated[str | None, Query(max_length=128)] = None,
    context: Annotated[int | None, Query(ge=1, le=10_000_000,
                                         description="tokens per sequence (default: the model's context length)")]
    = None,
    concurrency: Annotated[int, Query(ge=1, le=4096, description="sequences held at once")] = 1,
    dtype: Annotated[str | None, Query(max_length=32, description="serving dtype (default: the config's)")] = None,
    accelerator: Annotated[Literal["cpu", "gpu", "neuron"] | None, Query()] = None,
    vendor: Filter = None,
    region: Filter = None,
) -> FastJSONResponse:
    answer = ctx.catalog_service().recommend(repository, revision=revision, context=context,
                                             concurrency=concurrency, dtype=dtype, accelerator=accelerator,
                                             vendor=vendor, region=region)
    return FastJSONResponse(answer)
