"""Wire models of `/api/v1/catalog`, as huggingface_hub 2.4 sends them (`create_inference_endpoint_from_catalog`).

The listing and the deploy answers are built as plain dicts (`common.model_catalog` and `endpoint_to_wire`); only
the deploy body is parsed here, for shape. Unknown keys are ignored, as on the v2 routes, so a newer client's extra
fields do not break a deploy.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DeployConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=256, description="the endpoint's name; a random one when not given")


class CatalogDeploy(BaseModel):
    """`POST .../model/{repo}/deploy` and `.../recipe/{id}/deploy`. `accelerator` and `ggufFile` pick a recipe
    among a model's; huggingface_hub sends them with a repository only."""

    model_config = ConfigDict(extra="ignore")

    namespace: str = Field(max_length=256)
    config: DeployConfig | None = None
    accelerator: str | None = Field(None, max_length=32)
    ggufFile: str | None = Field(None, max_length=512)
