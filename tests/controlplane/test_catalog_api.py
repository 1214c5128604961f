"""`/api/v1/catalog`: listing with huggingface_hub's filters, deploys that follow the recipe through the ordinary
create, the recommended configuration (local directories on the local provider, the Hub through `HF_ENDPOINT`),
and bad input answered with a clear 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.catalog import Machine
from common.config import Settings
from tests.controlplane.conftest import ADMIN_TOKEN, Api, reconcile_ids
from tests.fixtures.hub import serve_hub

SMOLLM2_CONFIG = {  # SmolLM2-135M-Instruct's config.json (the runtime's real model)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True, "hidden_act": "silu",
    "torch_dtype": "bfloat16",
}
LLAMA_8B_CONFIG = {  # meta-llama/Llama-3.1-8B-Instruct
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}

SECRET_CATALOG = """
models:
- repoId: acme/secret-llm
  license: Apache 2.0
  task: text-generation
  createdAt: 2026-11-02T10:00:00Z
  recipes:
  - {id: secret-llm-vllm, engine: vllm, accelerator: gpu, vendor: aws, region: us-east-1, instanceType: nvidia-a100,
     instanceSize: x2, image: {tensorParallelSize: 2, maxNumSeqs: 32}, env: {VLLM_LOGGING_LEVEL: INFO},
     secrets: {HF_TOKEN: hf_recipe_secret_value}, scaling: {minReplica: 0, maxReplica: 3, scaleToZeroTimeout: 30}}
  - {id: secret-llm-gguf, engine: llamacpp, accelerator: gpu, vendor: aws, region: us-east-1,
     instanceType: nvidia-l4, instanceSize: x1, ggufFile: model-q4_k_m.gguf, image: {ctxSize: 8192}}
"""


def _app(settings: Settings) -> Iterator[TestClient]:
    from controlplane.app import create_app
    from controlplane.auth import invalidate_cache

    invalidate_cache()
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield http


@pytest.fixture
def secret_api(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "models.yaml"
    path.write_text(SECRET_CATALOG)
    yield from _app(settings.model_copy(update={"model_catalog": path}))


ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_list_filters_as_huggingface_hub_sends_them(api: Api) -> None:
    everything = api.http.get("/api/v1/catalog/list", headers=api.admin).json()["items"]
    repos = [m["repoId"] for m in everything]
    assert repos[0] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "BAAI/bge-small-en-v1.5" in repos
    first = everything[0]
    assert (first["modelName"], first["authorName"], first["license"], first["task"]) == (
        "SmolLM2-135M-Instruct", "HuggingFaceTB", "Apache 2.0", "text-generation")
    assert first["createdAt"].endswith("Z") and first["recipes"][0]["publicId"] == "smollm2-135m-instruct-local-cpu"

    def repos_for(**params: object) -> list[str]:
        r = api.http.get("/api/v1/catalog/list", params=params, headers=api.admin)
        assert r.status_code == 200, r.text
        return [m["repoId"] for m in r.json()["items"]]

    assert repos_for(engine="tei") == ["BAAI/bge-small-en-v1.5"]
    assert repos_for(engine="llamacpp") == ["Qwen/Qwen2.5-Coder-32B-Instruct-GGUF"]
    assert repos_for(task="sentence-embeddings") == ["BAAI/bge-small-en-v1.5"]
    assert repos_for(license="mit") == ["BAAI/bge-small-en-v1.5"]
    assert repos_for(search="qwen") == ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-Coder-32B-Instruct-GGUF"]
    assert repos_for(search="qwen", limit=1) == ["Qwen/Qwen2.5-7B-Instruct"]
    assert repos_for(engine="vllm", accelerator="cpu") == []
    # A recipe filter keeps the matching recipes only.
    cpu = api.http.get("/api/v1/catalog/list", params={"accelerator": "cpu"}, headers=api.admin).json()["items"]
    assert {r["accelerator"] for m in cpu for r in m["recipes"]} == {"cpu"}


def test_deploy_recipe_creates_the_endpoint_the_recipe_describes(secret_api: TestClient, settings: Settings) -> None:
    r = secret_api.post("/api/v1/catalog/recipe/secret-llm-vllm/deploy",
                        json={"namespace": "admin", "config": {"name": "my-llm"}}, headers=ADMIN)
    assert r.status_code == 201, r.text
    ep = r.json()["endpoint"]
    assert (ep["name"], ep["namespace"], ep["status"]["state"]) == ("my-llm", "admin", "pending")
    assert ep["compute"]["instanceType"] == "nvidia-a100" and ep["compute"]["instanceSize"] == "x2"
    assert ep["compute"]["scaling"] == {"minReplica": 0, "maxReplica": 3, "scaleToZeroTimeout": 30}
    assert ep["model"]["repository"] == "acme/secret-llm" and ep["model"]["task"] == "text-generation"
    assert ep["model"]["image"] == {"vLLM": {"tensorParallelSize": 2, "maxNumSeqs": 32}}
    assert ep["model"]["env"] == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert reconcile_ids(settings.redis_url)  # handed to the worker as any create
    listed = secret_api.get("/api/v1/catalog/list", headers=ADMIN)
    got = secret_api.get("/v2/endpoint/admin/my-llm", headers=ADMIN)
    for text in (r.text, listed.text, got.text):
        assert "hf_recipe_secret_value" not in text and "HF_TOKEN" not in text
    # The same name again is the create's own conflict.
    again = secret_api.post("/api/v1/catalog/recipe/secret-llm-vllm/deploy",
                            json={"namespace": "admin", "config": {"name": "my-llm"}}, headers=ADMIN)
    assert again.status_code == 409 and "already exists" in again.json()["error"]


def test_deploy_model_picks_a_recipe_by_accelerator_and_gguf_file(secret_api: TestClient) -> None:
    r = secret_api.post("/api/v1/catalog/model/acme/secret-llm/deploy",
                        json={"namespace": "admin", "ggufFile": "model-q4_k_m.gguf"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    ep = r.json()["endpoint"]
    assert ep["name"].startswith("secret-llm-") and len(ep["name"]) == len("secret-llm-") + 6
    assert ep["model"]["image"] == {"llamacpp": {"ctxSize": 8192, "modelPath": "model-q4_k_m.gguf"}}
    default = secret_api.post("/api/v1/catalog/model/acme/secret-llm/deploy", json={"namespace": "admin"},
                              headers=ADMIN).json()["endpoint"]
    assert "vLLM" in default["model"]["image"]  # the first recipe
    none = secret_api.post("/api/v1/catalog/model/acme/secret-llm/deploy",
                           json={"namespace": "admin", "accelerator": "neuron"}, headers=ADMIN)
    assert none.status_code == 400 and none.json()["param"] == "accelerator"
    assert "secret-llm-vllm" in none.json()["error"]


def test_deploy_on_the_local_provider_prefers_a_recipe_this_machine_runs(settings: Settings) -> None:
    for http in _app(settings.model_copy(update={"provider": "local", "local_gpu_emulation": False})):
        r = http.post("/api/v1/catalog/model/HuggingFaceTB/SmolLM2-135M-Instruct/deploy",
                      json={"namespace": "admin"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        assert r.json()["endpoint"]["compute"]["id"] == "local-local-cpu-x2"
        assert r.json()["endpoint"]["model"]["image"] == {"huggingface": {}}


def test_deploy_is_refused_where_the_token_cannot_create(api: Api) -> None:
    bob = api.mint("bob")
    alice = api.mint("alice")
    hidden = api.http.post("/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy",
                           json={"namespace": "alice", "config": {"name": "x"}}, headers=bob)
    assert hidden.status_code == 404 and "namespace 'alice' not found" in hidden.json()["error"]
    assert api.http.get("/v2/endpoint/alice", headers=alice).json()["items"] == []
    anonymous = api.http.post("/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy",
                              json={"namespace": "alice"})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), [
    ("get", "/api/v1/catalog/list?limit=100000000", None, 422, "limit"),
    ("get", "/api/v1/catalog/list?limit=0", None, 422, "limit"),
    ("get", "/api/v1/catalog/list?search=" + "x" * 300, None, 422, "search"),
    ("post", "/api/v1/catalog/recipe/nope/deploy", {"namespace": "admin"}, 404, "not found in the catalog"),
    ("post", "/api/v1/catalog/recipe/" + "a" * 400 + "/deploy", {"namespace": "admin"}, 404, "not found"),
    ("post", "/api/v1/catalog/model/../../etc/deploy", {"namespace": "admin"}, 404, None),
    ("post", "/api/v1/catalog/model/..%2F..%2Fetc%2Fpasswd/deploy", {"namespace": "admin"}, 404, "not in the catalog"),
    ("post", "/api/v1/catalog/model/nobody/nothing/deploy", {"namespace": "admin"}, 404, "not in the catalog"),
    ("post", "/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy", {}, 422, "namespace"),
    ("post", "/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy", {"namespace": "admin",
     "accelerator": "gpu"}, 400, "already is one"),
    ("post", "/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy",
     {"namespace": "admin", "config": {"name": "Bad_Name!"}}, 400, "name"),
    ("post", "/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy", {"namespace": "../x"}, 400, None),
    ("post", "/api/v1/catalog/recipe/qwen2-5-7b-instruct-vllm-l40s/deploy", {"namespace": 5}, 422, "namespace"),
    ("get", "/api/v1/catalog/recommend", None, 422, "repository"),
    ("get", "/api/v1/catalog/recommend?repository=../../etc", None, 400, "Hub repository id"),
    ("get", "/api/v1/catalog/recommend?repository=/etc", None, 400, "local provider"),
    ("get", "/api/v1/catalog/recommend?repository=a/b&context=0", None, 422, "context"),
    ("get", "/api/v1/catalog/recommend?repository=a/b&concurrency=99999", None, 422, "concurrency"),
    ("get", "/api/v1/catalog/recommend?repository=a/b&revision=..%2F..%2Fx", None, 400, "revision"),
    ("get", "/api/v1/catalog/recommend?repository=a/b&accelerator=tpu", None, 422, "accelerator"),
])
def test_bad_input_is_a_clear_4xx(api: Api, method: str, path: str, body: dict | None, status: int,
                                  needle: str | None) -> None:
    r = api.http.request(method.upper(), path, json=body, headers=api.admin)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and "Traceback" not in r.text
    if needle:
        assert needle in error
    assert all("\n" not in value and len(value) < 1000 for value in r.headers.values())


@pytest.fixture
def local_api(settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    local = settings.model_copy(update={"provider": "local", "local_gpu_emulation": False})
    for http in _app(local):
        yield http, local


def test_recommend_reads_a_local_snapshot_and_shows_the_arithmetic(local_api: tuple[TestClient, Settings],
                                                                   tmp_path: Path) -> None:
    http, _ = local_api
    model = tmp_path / "smollm2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    r = http.get("/api/v1/catalog/recommend", params={"repository": str(model), "context": 8192,
                                                      "concurrency": 4}, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["parameters"] == 134_515_008  # the model's published 134.5M
    assert body["memory"]["weightsBytes"] == 134_515_008 * 2
    assert body["memory"]["kvBytesPerToken"] == 2 * 30 * 3 * 64 * 2 == 23_040
    assert body["memory"]["kvCacheBytes"] == 23_040 * 8192 * 4
    # 0.25 + 0.70 GiB, + 10% + 1 GiB = 2.05 GiB: local cpu x1 (2 GiB, 1.8 usable) is too small, x2 (4 GiB) holds it.
    assert body["instance"]["id"] == "local-local-cpu-x2"
    text = "\n".join(body["arithmetic"])
    assert "2 × 30 layers × 3 KV heads × 64 head_dim × 2 B = 23,040 B" in text
    assert "23,040 B × 8,192 tokens × 4 concurrent" in text and "local/local cpu x2" in text

    # The model's own context length is the default, and a longer one is refused.
    assert http.get("/api/v1/catalog/recommend", params={"repository": str(model)},
                    headers=ADMIN).json()["context"] == 8192
    longer = http.get("/api/v1/catalog/recommend", params={"repository": str(model), "context": 9000},
                      headers=ADMIN)
    assert longer.status_code == 400 and longer.json()["param"] == "context"
    # GPU instances on a machine without one are left out, and the answer says why.
    gpu = http.get("/api/v1/catalog/recommend", params={"repository": str(model), "vendor": "aws",
                                                        "accelerator": "gpu"}, headers=ADMIN).json()
    if Machine.detect().gpus:
        assert gpu["instance"]["id"] == "aws-us-east-1-nvidia-t4-x1"
    else:
        assert gpu["instance"] is None and "needs a GPU" in gpu["arithmetic"][-1]
        assert gpu["arithmetic"][-1].startswith("left out, as a create here would refuse them: 48 instances")
    # A directory without config.json, '..', and a config that is not one.
    (tmp_path / "empty").mkdir()
    assert http.get("/api/v1/catalog/recommend", params={"repository": str(tmp_path / "empty")},
                    headers=ADMIN).status_code == 404
    dotdot = http.get("/api/v1/catalog/recommend", params={"repository": f"{model}/../../etc"}, headers=ADMIN)
    assert dotdot.status_code == 400 and "'..'" in dotdot.json()["error"]
    (tmp_path / "bad").mkdir()
    for content in (b"[" * 100_000, b"\xff\xfe", b"{}", json.dumps({**SMOLLM2_CONFIG, "hidden_size": 10**400}).encode(),
                    json.dumps({**SMOLLM2_CONFIG, "num_hidden_layers": "30"}).encode()):
        (tmp_path / "bad" / "config.json").write_bytes(content)
        bad = http.get("/api/v1/catalog/recommend", params={"repository": str(tmp_path / "bad")}, headers=ADMIN)
        assert bad.status_code == 400 and bad.json()["param"] == "repository", bad.text


def test_recommend_reads_the_hub_through_the_operators_endpoint_and_token(settings: Settings) -> None:
    with serve_hub({"meta-llama/Llama-3.1-8B-Instruct": LLAMA_8B_CONFIG}) as hub:
        configured = settings.model_copy(update={"hub_endpoint": hub.url, "hub_token": "hf_operator_token"})
        for http in _app(configured):
            r = http.get("/api/v1/catalog/recommend", params={"repository": "meta-llama/Llama-3.1-8B-Instruct",
                                                              "context": 8192, "concurrency": 16,
                                                              "accelerator": "gpu"}, headers=ADMIN)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"]["parameters"] == 8_030_261_248  # Llama 3.1 8B's published count
            assert body["memory"]["kvBytesPerToken"] == 2 * 32 * 8 * 128 * 2 == 131_072
            # 14.96 GiB weights + 16 GiB KV, + 10% + 1 GiB = 35.06 GiB: two L4s (48 GiB, $1.6/h) are cheaper than
            # the one L40S ($1.8/h) or two A10Gs ($2/h) that hold it too.
            assert body["instance"]["instanceType"] == "nvidia-l4" and body["instance"]["instanceSize"] == "x2"
            assert body["instance"]["vendor"] != "local"
            assert "Bearer hf_operator_token" in hub.authorizations
            missing = http.get("/api/v1/catalog/recommend", params={"repository": "nobody/nothing"}, headers=ADMIN)
            assert missing.status_code == 404 and "no config.json in nobody/nothing" in missing.json()["error"]
            fp8 = http.get("/api/v1/catalog/recommend", params={"repository": "meta-llama/Llama-3.1-8B-Instruct",
                                                                "context": 131072, "concurrency": 64,
                                                                "dtype": "float16"}, headers=ADMIN).json()
            assert fp8["instance"] is None and "no instance holds" in fp8["arithmetic"][-1]


def test_recommend_says_when_the_hub_cannot_be_reached(settings: Settings) -> None:
    from tests.fixtures.processes import free_port

    closed = settings.model_copy(update={"hub_endpoint": f"http://127.0.0.1:{free_port()}"})
    for http in _app(closed):
        r = http.get("/api/v1/catalog/recommend", params={"repository": "meta-llama/Llama-3.1-8B-Instruct"},
                     headers=ADMIN)
        assert r.status_code == 503, r.text
        assert "the Hub is not reachable from the control plane" in r.json()["error"]
