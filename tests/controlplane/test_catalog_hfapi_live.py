"""huggingface_hub's own catalog calls against a live `python -m controlplane`, unchanged except for where
`constants.INFERENCE_CATALOG_ENDPOINT` points (huggingface_hub reads no environment variable for it)."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from tests.controlplane.conftest import LiveServer, reconcile_ids


@pytest.fixture
def hf(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> tuple[HfApi, LiveServer]:
    monkeypatch.setattr(constants, "INFERENCE_ENDPOINTS_ENDPOINT", f"{live_server.url}/v2")
    monkeypatch.setattr(constants, "INFERENCE_CATALOG_ENDPOINT", f"{live_server.url}/api/v1/catalog")
    token = live_server.mint("alice", orgs=["acme"])
    monkeypatch.setenv("HF_TOKEN", token)  # the InferenceEndpoint objects' own HfApi() finds it there
    return HfApi(endpoint=live_server.url, token=token), live_server


@pytest.mark.filterwarnings("ignore::UserWarning")  # the catalog methods are @experimental
def test_list_and_deploy_from_the_catalog(hf: tuple[HfApi, LiveServer]) -> None:
    api, server = hf
    catalog = api.list_inference_catalog()
    smollm = catalog[0]
    assert (smollm.repo_id, smollm.name, smollm.author, smollm.license, smollm.task) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", "HuggingFaceTB", "Apache 2.0",
        "text-generation")
    assert smollm.created_at.tzinfo is not None
    assert [r.id for r in smollm.recipes][0] == "smollm2-135m-instruct-local-cpu"

    vllm_gpu = api.list_inference_catalog(engine="vllm", accelerator="gpu", search="qwen", limit=5)
    assert [m.repo_id for m in vllm_gpu] == ["Qwen/Qwen2.5-7B-Instruct"]
    assert [(r.id, r.engine, r.accelerator) for r in vllm_gpu[0].recipes] == [
        ("qwen2-5-7b-instruct-vllm-l40s", "vllm", "gpu")]
    gguf = api.list_inference_catalog(engine="llamacpp")[0]
    assert gguf.recipes[0].gguf_file == "qwen2.5-coder-32b-instruct-q4_k_m.gguf"
    assert [m.repo_id for m in api.list_inference_catalog(task="sentence-embeddings", license="MIT")] == [
        "BAAI/bge-small-en-v1.5"]

    # A recipe by id, named: the endpoint follows the recipe.
    ep = api.create_inference_endpoint_from_catalog(recipe_id="qwen2-5-7b-instruct-vllm-l40s", name="qwen")
    assert (ep.name, ep.namespace, ep.repository, ep.status) == ("qwen", "alice", "Qwen/Qwen2.5-7B-Instruct",
                                                                 "pending")
    assert ep.raw["compute"]["instanceType"] == "nvidia-l40s" and ep.raw["model"]["image"] == {
        "vLLM": {"maxNumSeqs": 128}}
    assert api.get_inference_endpoint("qwen").raw["compute"]["scaling"]["maxReplica"] == 2
    assert ep.fetch().status == "pending"  # the object's own actions reach the v2 API

    # A repository, in an organisation, narrowed by accelerator; no name: one is generated.
    org = api.create_inference_endpoint_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct", accelerator="cpu",
                                                     namespace="acme")
    assert org.namespace == "acme" and org.name.startswith("smollm2-135m-instruct-")
    assert org.raw["compute"]["id"] == "local-local-cpu-x2" and org.raw["model"]["image"] == {"huggingface": {}}
    quant = api.create_inference_endpoint_from_catalog("Qwen/Qwen2.5-Coder-32B-Instruct-GGUF", name="coder-q8",
                                                       gguf_file="qwen2.5-coder-32b-instruct-q8_0.gguf")
    assert quant.raw["model"]["image"]["llamacpp"]["modelPath"] == "qwen2.5-coder-32b-instruct-q8_0.gguf"
    assert quant.raw["compute"]["instanceType"] == "nvidia-a100"
    assert len(reconcile_ids(server.redis_url)) == 3

    with pytest.raises(HfHubHTTPError) as missing:
        api.create_inference_endpoint_from_catalog("nobody/nothing")
    assert missing.value.response.status_code == 404 and "not in the catalog" in str(missing.value)
    with pytest.raises(HfHubHTTPError) as taken:
        api.create_inference_endpoint_from_catalog(recipe_id="qwen2-5-7b-instruct-vllm-l40s", name="qwen")
    assert taken.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as hidden:
        api.create_inference_endpoint_from_catalog(recipe_id="qwen2-5-7b-instruct-vllm-l40s", namespace="bob")
    assert hidden.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi(endpoint=server.url, token=False).list_inference_catalog(token=False)
    assert anonymous.value.response.status_code == 401
