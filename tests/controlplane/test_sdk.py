"""The Python SDK against a live control plane: huggingface_hub-style calls, chaining, wait() semantics."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import controlplane
from controlplane import (InferenceEndpoint, create_inference_endpoint, get_inference_endpoint,
                          list_inference_endpoints)
from controlplane.sdk import EndpointctlHTTPError, InferenceEndpointError, InferenceEndpointTimeoutError
from tests.controlplane.conftest import LiveServer


def _set(server: LiveServer, name: str, **cols: object) -> None:
    engine = create_engine(server.database_url)
    with engine.begin() as conn:
        assignments = ", ".join(f"{k} = :{k}" for k in cols)
        conn.execute(text(f"UPDATE endpoints SET {assignments} WHERE name = :name"), {**cols, "name": name})
    engine.dispose()


@pytest.fixture
def sdk_env(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    monkeypatch.setenv("ENDPOINTCTL_URL", live_server.url)
    monkeypatch.setenv("ENDPOINTCTL_TOKEN", live_server.mint("alice", orgs=["acme"]))
    return live_server


def test_sdk_lifecycle(sdk_env: LiveServer) -> None:
    ep = create_inference_endpoint("s1", repository="gpt2", framework="pytorch", accelerator="cpu",
                                   instance_size="x1", instance_type="intel-icl", region="us-east-1", vendor="aws",
                                   type="protected", secrets={"K": "sdk-secret"}, tags=["a"])
    assert isinstance(ep, InferenceEndpoint) and ep.namespace == "alice" and ep.status == "pending"
    assert ep.type == "authenticated" and ep.url is None and ep.health_route == "/health"
    assert get_inference_endpoint("s1").repository == "gpt2"
    create_inference_endpoint("o1", namespace="acme", repository="gpt2", framework="pytorch", accelerator="cpu",
                              instance_size="x1", instance_type="intel-icl", region="us-east-1", vendor="aws")
    assert [e.name for e in list_inference_endpoints()] == ["s1"]
    assert sorted(e.name for e in list_inference_endpoints("*")) == ["o1", "s1"]

    # Actions return self, so calls chain; the object is refreshed in place.
    assert ep.update(max_replica=3, revision="r1").pause() is ep
    assert ep.revision == "r1" and ep.raw["compute"]["scaling"]["maxReplica"] == 3
    assert ep.raw["status"]["desiredState"] == "paused"
    assert ep.resume().raw["status"]["desiredState"] == "running"
    assert ep.scale_to_zero().raw["status"]["desiredState"] == "scaledToZero"
    assert [e["reason"] for e in ep.events(limit=2)] == ["ScaleToZeroRequested", "ResumeRequested"]
    _set(sdk_env, "s1", state="running")
    assert ep.resume().status == "running"  # 400 "already running" is success, as in huggingface_hub
    ep.delete()
    with pytest.raises(EndpointctlHTTPError) as err:
        ep.fetch()
    assert err.value.status_code == 404


def test_wait_semantics_and_clients(sdk_env: LiveServer) -> None:
    ep = create_inference_endpoint("w1", repository="gpt2", framework="pytorch", accelerator="cpu",
                                   instance_size="x1", instance_type="intel-icl", region="us-east-1", vendor="aws",
                                   custom_image={"url": "img:1", "healthRoute": "/healthz"})
    with pytest.raises(InferenceEndpointTimeoutError) as err:
        ep.wait(timeout=0.3, refresh_every=0.1)
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, InferenceEndpointError)
    with pytest.raises(InferenceEndpointError):
        _ = ep.client  # no URL yet
    # Running with a URL whose health route answers 200 (the control plane's own /healthz stands in for a replica).
    _set(sdk_env, "w1", state="running", url=sdk_env.url + "/")
    assert ep.wait(timeout=30, refresh_every=0.1) is ep and ep.url == sdk_env.url + "/"
    client = ep.client
    assert client.model == sdk_env.url + "/" and client.token == ep._token and ep._token.startswith("epc_")
    oa = ep.openai_client()
    assert str(oa.base_url) == sdk_env.url + "/v1/" and oa.api_key == ep._token
    _set(sdk_env, "w1", state="failed", message="image pull failed: img:1")
    with pytest.raises(InferenceEndpointError, match="image pull failed"):
        ep.fetch().wait(timeout=5, refresh_every=0.1)
    _set(sdk_env, "w1", state="updateFailed")
    with pytest.raises(InferenceEndpointError, match="failed to update"):
        ep.fetch().wait(timeout=5, refresh_every=0.1)


def test_sdk_errors_and_arguments(sdk_env: LiveServer) -> None:
    with pytest.raises(EndpointctlHTTPError) as err:
        create_inference_endpoint("BAD", repository="gpt2", framework="pytorch", accelerator="cpu",
                                  instance_size="x1", instance_type="intel-icl", region="us-east-1", vendor="aws")
    assert err.value.status_code == 400 and "DNS label" in err.value.message
    with pytest.raises(EndpointctlHTTPError) as err:
        get_inference_endpoint("x", token="epc_invalid", url=sdk_env.url)
    assert err.value.status_code == 401
    with pytest.raises(ValueError):
        create_inference_endpoint("c", repository="gpt2", framework="pytorch", accelerator="cpu", instance_size="x1",
                                  instance_type="intel-icl", region="us-east-1", vendor="aws",
                                  container_registry_username="u")
    assert controlplane.get_inference_endpoint is get_inference_endpoint


def test_sdk_errors_are_caught_by_huggingface_hubs_except_clauses() -> None:
    """The SDK needs no huggingface_hub, but where it is installed, code written against it catches ours."""
    from huggingface_hub import errors as hub

    with pytest.raises(hub.InferenceEndpointTimeoutError):
        raise InferenceEndpointTimeoutError("late")
    assert issubclass(InferenceEndpointTimeoutError, TimeoutError)
    assert issubclass(InferenceEndpointError, hub.InferenceEndpointError)
