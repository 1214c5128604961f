"""Image variants take the settings their engine documents (`common.engines.ENGINES`) and nothing else: a field the
hosted API would silently drop is a 422 naming it, on create and on update alike."""

from __future__ import annotations

import pytest

from common.engines import COMMON_SETTINGS, ENGINES
from tests.controlplane.conftest import Api, payload
from tests.controlplane.test_validation import _create, _with

GOOD = {
    "vLLM": {"url": "vllm/vllm-openai:v0.23.0", "port": 8000, "tensorParallelSize": 2, "dataParallelSize": 1,
             "maxNumSeqs": 64, "maxNumBatchedTokens": 8192, "kvCacheDtype": "fp8"},
    "sGLang": {"url": "lmsysorg/sglang:v0.5.6", "port": 30000, "tensorParallelSize": 2},
    "llamacpp": {"modelPath": "model-Q4_K_M.gguf", "ctxSize": 4096, "nParallel": 2, "threadsHttp": 4,
                 "embeddings": False, "healthRoute": "/health"},
    "tgi": {"maxInputLength": 1024, "maxTotalTokens": 2048, "maxBatchPrefillTokens": 4096,
            "maxBatchTotalTokens": 16384, "quantize": "awq"},
    "tei": {"maxBatchTokens": 16384, "maxConcurrentRequests": 512, "pooling": "mean"},
    "hfServe": {"port": 80},
}


@pytest.mark.parametrize("variant", list(GOOD))
def test_documented_settings_are_accepted_and_stored(api: Api, variant: str) -> None:
    r = _create(api, _with("model.image", {variant: GOOD[variant]}, name=f"ok-{variant.lower()}"))
    assert r.status_code == 201, r.text
    assert r.json()["model"]["image"] == {variant: GOOD[variant]}


@pytest.mark.parametrize(("image", "param"), [
    ({"vLLM": {"foo": 1}}, "model.image.vLLM.foo"),
    ({"tgi": {"tensorParallelSize": 2}}, "model.image.tgi.tensorParallelSize"),  # huggingface_hub warns: dropped
    ({"sGLang": {"dataParallelSize": 2}}, "model.image.sGLang.dataParallelSize"),
    ({"huggingface": {"maxNumSeqs": 4}}, "model.image.huggingface.maxNumSeqs"),
    ({"llamacpp": {"modelPath": "a.gguf", "kvCacheDtype": "fp8"}}, "model.image.llamacpp.kvCacheDtype"),
    ({"custom": {"url": "x:1", "environment": {"A": "b"}}}, "model.image.custom.environment"),
])
def test_an_unknown_setting_is_a_422_naming_the_field(api: Api, image: dict, param: str) -> None:
    r = _create(api, _with("model.image", image))
    assert r.status_code == 422, r.text
    assert r.json()["param"] == param and param in r.json()["error"]
    variant = next(iter(image))
    for allowed in COMMON_SETTINGS | ENGINES[variant].settings:
        assert allowed in r.json()["error"]  # and it lists what the variant takes


@pytest.mark.parametrize(("image", "param", "text"), [
    ({"vLLM": {"kvCacheDtype": "int3"}}, "model.image.vLLM.kvCacheDtype", "must be one of auto, fp8"),
    ({"vLLM": {"maxNumSeqs": 0}}, "model.image.vLLM.maxNumSeqs", "between 1 and"),
    ({"tgi": {"quantize": "--rm"}}, "model.image.tgi.quantize", "must be one of"),
    ({"tei": {"pooling": "max"}}, "model.image.tei.pooling", "must be one of"),
    ({"llamacpp": {"ctxSize": 512}}, "model.image.llamacpp.modelPath", "modelPath is required"),
    ({"llamacpp": {"modelPath": "../etc/passwd.gguf"}}, "model.image.llamacpp.modelPath", ".gguf file inside"),
    ({"llamacpp": {"modelPath": "model.bin"}}, "model.image.llamacpp.modelPath", ".gguf file inside"),
    ({"llamacpp": {"modelPath": "-m.gguf"}}, "model.image.llamacpp.modelPath", "plain file name"),
])
def test_settings_outside_what_the_engine_accepts_name_the_parameter(api: Api, image: dict, param: str,
                                                                     text: str) -> None:
    r = _create(api, _with("model.image", image))
    assert r.status_code == 400, r.text
    assert r.json()["param"] == param and text in r.json()["error"]


def test_llamacpp_takes_the_file_from_gguf_file_env(api: Api) -> None:
    body = _with("model.image", {"llamacpp": {}}, name="gguf-env")
    body["model"]["env"] = {"GGUF_FILE": "model-Q8_0.gguf"}
    assert _create(api, body).status_code == 201


def test_update_refuses_an_unknown_setting_too(api: Api) -> None:
    assert _create(api, payload("upd")).status_code == 201
    r = api.http.put("/v2/endpoint/admin/upd", json={"model": {"image": {"vLLM": {"maxNumSeq": 8}}}},
                     headers=api.admin)
    assert r.status_code == 422 and r.json()["param"] == "model.image.vLLM.maxNumSeq", r.text
    r = api.http.put("/v2/endpoint/admin/upd", json={"model": {"image": {"vLLM": {"maxNumSeqs": 8}}}},
                     headers=api.admin)
    assert r.status_code == 200 and r.json()["model"]["image"] == {"vLLM": {"maxNumSeqs": 8}}, r.text


def test_huggingface_hubs_documented_custom_image_example_is_honoured(api: Api) -> None:
    """huggingface_hub's create_inference_endpoint example: `health_route` and `env` inside `custom_image`. The
    route is the health route; the env joins model.env under the same policy, model.env winning a clash."""
    body = _with("model.image", {"custom": {"url": "ghcr.io/huggingface/text-generation-inference:latest",
                                            "health_route": "/ready",
                                            "env": {"MAX_TOTAL_TOKENS": "1512", "MODEL_ID": "/repository",
                                                    "SHARED": "from-image"}}}, name="hf-example")
    body["model"]["env"] = {"SHARED": "from-model"}
    r = _create(api, body)
    assert r.status_code == 201, r.text
    model = r.json()["model"]
    assert model["image"] == {"custom": {"url": "ghcr.io/huggingface/text-generation-inference:latest",
                                         "healthRoute": "/ready"}}
    assert model["env"] == {"MAX_TOTAL_TOKENS": "1512", "MODEL_ID": "/repository", "SHARED": "from-model"}


@pytest.mark.parametrize(("image", "status", "param"), [
    ({"custom": {"url": "x:1", "env": {"LD_PRELOAD": "/tmp/evil.so"}}}, 422, "model.image.custom.env.LD_PRELOAD"),
    ({"custom": {"url": "x:1", "env": ["A=b"]}}, 400, "model.image.custom.env"),
    ({"custom": {"url": "x:1", "env": {"A": 1}}}, 400, "model.image.custom.env"),
    ({"custom": {"url": "x:1", "health_route": 5}}, 400, "model.image.custom.health_route"),
    ({"custom": {"url": "x:1", "health_route": "health"}}, 400, "model.image.custom.healthRoute"),
])
def test_the_documented_aliases_get_the_same_checks(api: Api, image: dict, status: int, param: str) -> None:
    r = _create(api, _with("model.image", image, name="alias-bad"))
    assert r.status_code == status, r.text
    assert r.json()["param"] == param and "Traceback" not in r.text
