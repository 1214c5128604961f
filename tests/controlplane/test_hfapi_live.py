"""huggingface_hub's own HfApi against a live `python -m controlplane` process, on both databases.

The client is pointed at us the documented way: `constants.INFERENCE_ENDPOINTS_ENDPOINT = <url>/v2` and
`HfApi(endpoint=<url>)` for whoami. No worker runs, so endpoints stay `pending`: the hand-off is asserted on the
Redis broker instead.
"""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from tests.controlplane.conftest import LiveServer, reconcile_ids


@pytest.fixture
def hf(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> tuple[HfApi, LiveServer, str]:
    monkeypatch.setattr(constants, "INFERENCE_ENDPOINTS_ENDPOINT", f"{live_server.url}/v2")
    token = live_server.mint("alice", orgs=["acme"])
    # `list_inference_endpoints(namespace="*")` lists the personal namespace through the module-level HfApi,
    # which only knows the token from HF_TOKEN (as for real users who logged in).
    monkeypatch.setenv("HF_TOKEN", token)
    return HfApi(endpoint=live_server.url, token=token), live_server, token


def test_hfapi_full_lifecycle(hf: tuple[HfApi, LiveServer, str]) -> None:
    api, server, token = hf
    assert api.whoami()["name"] == "alice"

    ep = api.create_inference_endpoint(
        "e1", repository="gpt2", framework="pytorch", task="text-generation", accelerator="gpu", vendor="aws",
        region="us-east-1", instance_type="nvidia-a100", instance_size="x2", min_replica=0, max_replica=2,
        scale_to_zero_timeout=15, scaling_metric="pendingRequests", scaling_threshold=1.5,
        custom_image={"url": "vllm/vllm-openai:v0.23.0", "port": 8000, "healthRoute": "/health"},
        container_args=["--max-model-len", "4096"], env={"A": "1"}, secrets={"S": "top-secret-x"},
        domain="d.example", path="/p", cache_http_responses=True, tags=["t"], type="private")
    assert (ep.name, ep.namespace, ep.repository, ep.framework, ep.task) == ("e1", "alice", "gpt2", "pytorch",
                                                                            "text-generation")
    assert ep.status == "pending" and ep.url is None and ep.type == "private" and ep.health_route == "/health"
    assert ep.created_at.tzinfo is not None and ep.revision is None
    assert ep.raw["compute"]["scaling"]["measure"] == {"pendingRequests": 1.5}
    assert "top-secret-x" not in str(ep.raw)

    got = api.get_inference_endpoint("e1")
    assert got.name == "e1" and got.raw["model"]["image"]["custom"]["url"] == "vllm/vllm-openai:v0.23.0"
    assert [e.name for e in api.list_inference_endpoints()] == ["e1"]

    api.create_inference_endpoint("o1", namespace="acme", repository="gpt2", framework="pytorch", accelerator="cpu",
                                  vendor="aws", region="us-east-1", instance_type="intel-icl", instance_size="x1")
    everything = api.list_inference_endpoints(namespace="*")
    assert sorted((e.namespace, e.name) for e in everything) == [("acme", "o1"), ("alice", "e1")]

    updated = api.update_inference_endpoint("e1", min_replica=1, max_replica=4, revision="abc",
                                            scaling_metric="hardwareUsage", scaling_threshold=80)
    assert updated.revision == "abc" and updated.raw["compute"]["scaling"]["maxReplica"] == 4
    assert updated.raw["compute"]["scaling"]["measure"] == {"hardwareUsage": 80}
    assert updated.raw["model"]["env"] == {"A": "1"} and updated.raw["tags"] == ["t"]
    # A custom image takes no tensorParallelSize (huggingface_hub warns that the hosted API drops it): a 422 here.
    with pytest.warns(UserWarning, match="not a known setting"), pytest.raises(HfHubHTTPError) as refused:
        api.update_inference_endpoint("e1", tensor_parallel_size=2)
    assert refused.value.response.status_code == 422
    # On a vLLM image, tensor_parallel_size alone makes the client GET the image and PUT it back whole.
    api.update_inference_endpoint("e1", custom_image={"vLLM": {"url": "vllm/vllm-openai:v0.23.0", "port": 8000}})
    tp = api.update_inference_endpoint("e1", tensor_parallel_size=2)
    assert tp.raw["model"]["image"]["vLLM"] == {"url": "vllm/vllm-openai:v0.23.0", "port": 8000,
                                                "tensorParallelSize": 2}

    paused = api.pause_inference_endpoint("e1")
    assert paused.raw["status"]["desiredState"] == "paused"
    resumed = api.resume_inference_endpoint("e1")
    assert resumed.raw["status"]["desiredState"] == "running"
    zero = api.scale_to_zero_inference_endpoint("e1")
    assert zero.raw["status"]["desiredState"] == "scaledToZero"
    # The InferenceEndpoint object's own actions chain and mutate in place.
    assert ep.fetch().pause() is ep and ep.raw["status"]["desiredState"] == "paused"

    hardware = api.list_inference_endpoints_hardware()
    assert any(h.instance_type == "nvidia-a100" and h.instance_size == "x2" and h.vendor == "aws" for h in hardware)

    api.delete_inference_endpoint("e1")
    with pytest.raises(HfHubHTTPError) as err:
        api.get_inference_endpoint("e1")
    assert err.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as err:
        api.create_inference_endpoint("e1", repository="gpt2", framework="pytorch", accelerator="cpu", vendor="aws",
                                      region="us-east-1", instance_type="intel-icl", instance_size="x1")
    assert err.value.response.status_code == 409 and "being deleted" in str(err.value)

    ids = reconcile_ids(server.redis_url)
    # create e1, create o1, update x3 (the refused one enqueues nothing), pause, resume, scale-to-zero, pause, delete
    assert len(ids) == 10 and len(set(ids)) == 2
    assert "top-secret-x" not in server.log.read_text()


def test_hfapi_errors_carry_our_messages(hf: tuple[HfApi, LiveServer, str]) -> None:
    api, server, _ = hf
    with pytest.raises(HfHubHTTPError) as err:
        api.create_inference_endpoint("Bad_Name", repository="gpt2", framework="pytorch", accelerator="cpu",
                                      vendor="aws", region="us-east-1", instance_type="intel-icl", instance_size="x1")
    assert err.value.response.status_code == 400 and "DNS label" in str(err.value)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_inference_endpoint("ok", repository="gpt2", framework="pytorch", accelerator="gpu",
                                      vendor="aws", region="us-east-1", instance_type="nvidia-zz", instance_size="x1")
    assert "valid instance types" in str(err.value)
    with pytest.raises(HfHubHTTPError) as err:
        api.list_inference_endpoints(namespace="someone-else")
    assert err.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.url, token="epc_wrong").whoami()
    assert err.value.response.status_code == 401
    # Resume of a running endpoint: the client's `running_ok` path relies on 400 + "already running".
    api.create_inference_endpoint("run", repository="gpt2", framework="pytorch", accelerator="cpu", vendor="aws",
                                  region="us-east-1", instance_type="intel-icl", instance_size="x1")
    from sqlalchemy import create_engine, text

    engine = create_engine(server.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE endpoints SET state='running' WHERE name='run'"))
    engine.dispose()
    assert api.resume_inference_endpoint("run").status == "running"
    with pytest.raises(HfHubHTTPError) as err:
        api.resume_inference_endpoint("run", running_ok=False)
    assert err.value.response.status_code == 400 and "already running" in str(err.value)


def test_openapi_health_and_metrics(live_server: LiveServer) -> None:
    spec = httpx.get(f"{live_server.url}/openapi.json").json()
    for path in ("/v2/endpoint/{namespace}", "/v2/endpoint/{namespace}/{name}", "/v2/endpoint/{namespace}/{name}/pause",
                 "/v2/endpoint/{namespace}/{name}/resume", "/v2/endpoint/{namespace}/{name}/scale-to-zero",
                 "/v2/endpoint/{namespace}/{name}/logs", "/v2/endpoint/{namespace}/{name}/events",
                 "/v2/provider/{namespace}", "/api/whoami-v2", "/api/tokens", "/api/tokens/{token_id}", "/healthz",
                 "/readyz", "/metrics"):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert httpx.get(f"{live_server.url}/docs").status_code == 200
    httpx.get(f"{live_server.url}/v2/endpoint/admin", headers=live_server.headers())
    metrics = httpx.get(f"{live_server.url}/metrics", headers=live_server.headers()).text
    assert 'endpointctl_api_requests_total{method="GET",route="/v2/endpoint/{namespace}",status="200"}' in metrics
    assert "endpointctl_api_request_seconds_bucket" in metrics
