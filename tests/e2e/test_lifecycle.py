"""The whole lifecycle through huggingface_hub's own HfApi, the OpenAI SDK and the gateway, with real replicas.

Runs on the embedded default (SQLite, embedded broker) and on real PostgreSQL + Redis started by the suite, on the
random tiny model (speed); one endpoint on the real model (SmolLM2-135M-Instruct) shows that what comes back through
the gateway is the model's real answer.
"""

from __future__ import annotations

import time

import httpx
import huggingface_hub.constants
import openai
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from tests.e2e.conftest import ADMIN_TOKEN, Api, replica_processes
from tests.fixtures.models import FRANCE_QUESTION
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.slow]


@pytest.fixture
def hf_api(monkeypatch):
    def make(url: str) -> HfApi:
        monkeypatch.setattr(huggingface_hub.constants, "INFERENCE_ENDPOINTS_ENDPOINT", url + "/v2")
        # InferenceEndpoint objects re-read the token from the environment, as for a user who logged in.
        monkeypatch.setenv("HF_TOKEN", ADMIN_TOKEN)
        return HfApi(endpoint=url, token=ADMIN_TOKEN)

    return make


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis-postgres", marks=[pytest.mark.postgres, pytest.mark.redis])])
def test_full_lifecycle_with_hfapi_and_openai(backend, make_stack, hf_api, tiny_model_dir):
    stack = make_stack(backend)
    api = hf_api(stack.url)
    raw = Api(stack.url)

    endpoint = api.create_inference_endpoint(
        "e2e-chat", repository=str(tiny_model_dir), framework="pytorch", task="text-generation", accelerator="cpu",
        vendor="aws", region="us-east-1", instance_size="x1", instance_type="intel-icl", min_replica=0,
        max_replica=1, scale_to_zero_timeout=15, type="authenticated",
    )
    assert endpoint.status in ("pending", "initializing")
    endpoint.wait(timeout=240, refresh_every=1)
    assert endpoint.status == "running"
    assert endpoint.url == f"{stack.url}/endpoints/admin/e2e-chat"
    body = raw.get("e2e-chat")["status"]
    # Older huggingface_hub clients waited on GET {url} itself.
    assert httpx.get(endpoint.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert body["readyReplica"] == 1 and body["targetReplica"] == 1

    # huggingface_hub's InferenceClient through the gateway (it sends model="dummy").
    answer = endpoint.client.chat_completion(messages=[{"role": "user", "content": "Hello!"}], max_tokens=8)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens >= 1

    # The OpenAI SDK, streaming through the gateway.
    client = openai.OpenAI(base_url=endpoint.url + "/v1/", api_key=ADMIN_TOKEN)
    chunks = list(client.chat.completions.create(
        model="tgi", stream=True, max_tokens=24, temperature=0, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to five."}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c for c in chunks if c.choices and c.choices[0].finish_reason][-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Scale to zero: the replica process goes away, and one request wakes it and succeeds.
    endpoint.scale_to_zero()
    zero = raw.wait_state("e2e-chat", "scaledToZero", timeout=60)
    assert zero["status"]["url"] == endpoint.url  # stable, as on Hugging Face: a request to it wakes the endpoint
    wait_until(lambda: not any(replica_processes(stack.data_dir).values()), timeout=30, what="replicas to stop")
    started = time.monotonic()
    woke = client.with_options(timeout=180).chat.completions.create(
        model="tgi", max_tokens=4, messages=[{"role": "user", "content": "wake up"}])
    assert woke.choices[0].message.role == "assistant"
    assert time.monotonic() - started > 0  # held, not refused
    # The gateway forwards as soon as the replica is observed ready; the worker publishes `running` on its next
    # reconcile, once the health route answers through the gateway, so the state may trail the answer briefly.
    raw.wait_state("e2e-chat", "running", timeout=30)
    assert any(e["reason"] == "Waking" for e in raw.events("e2e-chat"))

    # Pause: 503 saying so, and requests do not wake it.
    endpoint.pause()
    raw.wait_state("e2e-chat", "paused", timeout=60)
    with pytest.raises(openai.APIStatusError) as refused:
        client.with_options(max_retries=0).chat.completions.create(
            model="tgi", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503 and "paused" in str(refused.value.message)
    time.sleep(2)
    assert raw.state("e2e-chat") == "paused"
    assert not any(replica_processes(stack.data_dir).values())

    endpoint.resume().wait(timeout=240, refresh_every=1)
    assert endpoint.status == "running"
    again = client.chat.completions.create(model="tgi", max_tokens=4, messages=[{"role": "user", "content": "back?"}])
    assert again.choices[0].message.content is not None

    # Update: a new spec revision rolls out (new replica first, old one stopped once the new one serves).
    api.update_inference_endpoint("e2e-chat", namespace="admin",
                                  env={"MAX_TOTAL_TOKENS": "600", "MAX_INPUT_TOKENS": "500"})
    wait_until(lambda: [p.name for p in (stack.data_dir / "local-replicas").glob("*/r*.json")] == ["r2-0.json"],
               timeout=240, what="revision 2 to replace revision 1")
    raw.wait_state("e2e-chat", "running", timeout=240)
    endpoint.wait(timeout=240, refresh_every=1)
    assert any(e["reason"] == "Updating" for e in raw.events("e2e-chat"))
    info = httpx.get(endpoint.url + "/info", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert info["max_total_tokens"] == 600

    endpoint.delete()
    with pytest.raises(HfHubHTTPError) as gone:
        wait_until(lambda: api.get_inference_endpoint("e2e-chat", namespace="admin") and False, timeout=60,
                   what="the endpoint to be deleted")
    assert gone.value.response.status_code == 404
    wait_until(lambda: not any(replica_processes(stack.data_dir).values()), timeout=30, what="no process left")
    assert raw.http.get("/v2/endpoint/admin").json()["items"] == []


@pytest.mark.realmodel
def test_the_chat_answer_through_the_gateway_is_a_real_sentence(make_stack, hf_api, real_model_dir):
    stack = make_stack()
    api = hf_api(stack.url)
    endpoint = api.create_inference_endpoint(
        "e2e-real", repository=str(real_model_dir), framework="pytorch", task="text-generation", accelerator="cpu",
        vendor="aws", region="us-east-1", instance_size="x1", instance_type="intel-icl", type="authenticated",
        env={"MAX_TOTAL_TOKENS": "1024"},
    )
    endpoint.wait(timeout=300, refresh_every=1)
    assert endpoint.url == f"{stack.url}/endpoints/admin/e2e-real"

    client = openai.OpenAI(base_url=endpoint.url + "/v1/", api_key=ADMIN_TOKEN, max_retries=0, timeout=120)
    messages = [{"role": "user", "content": FRANCE_QUESTION}]
    reply = client.chat.completions.create(model="tgi", temperature=0, max_tokens=32, messages=messages)
    answer = reply.choices[0].message.content
    assert "Paris" in answer and answer[0].isupper() and answer.rstrip().endswith("."), answer  # a sentence
    assert reply.choices[0].finish_reason == "stop"  # ended by the model, not by max_tokens
    chunks = client.chat.completions.create(model="tgi", temperature=0, max_tokens=32, messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    # huggingface_hub's InferenceClient through the same gateway route.
    hub_reply = endpoint.client.chat_completion(messages=messages, max_tokens=32, temperature=0)
    assert hub_reply.choices[0].message.content == answer
    endpoint.delete()
