"""The CLI and the SDK go through one client and one body builder: the same choices send the same bodies.

The client's calls are intercepted at `ControlPlaneClient` (the one both use), so these tests see exactly the JSON
each front end would put on the wire, and they would fail if either front end built its body on its own again.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from controlplane import bodies, sdk
from controlplane.client import ControlPlaneClient, EndpointctlHTTPError, InvalidName, error_message
from controlplane.schemas import EndpointCreate, EndpointUpdate

URL = "http://control-plane.invalid"


def _as_endpoint(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the API would answer for a body: enough of an endpoint for the SDK and the CLI to render it."""
    raw = copy.deepcopy(body)
    raw["model"].setdefault("task", None)
    raw["model"].setdefault("revision", None)
    return {**raw, "namespace": namespace, "healthRoute": "/health",
            "status": {"state": "pending", "url": None, "message": None, "createdAt": "2026-01-01T00:00:00.000Z",
                       "updatedAt": "2026-01-01T00:00:00.000Z"}}


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every body either front end hands to the client, as (method, body); the client answers as the API would."""
    sent: list[tuple[str, dict[str, Any]]] = []
    current = _as_endpoint("alice", bodies.create_body(
        "e", repository="gpt2", framework="pytorch", accelerator="cpu", instance_size="x1", instance_type="intel-icl",
        region="us-east-1", vendor="aws", custom_image={"tgi": {"url": "img:1", "tensorParallelSize": 1}}))

    def create_endpoint(self: ControlPlaneClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(("POST", body))
        return _as_endpoint(namespace, body)

    def update_endpoint(self: ControlPlaneClient, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(("PUT", body))
        return current

    monkeypatch.setattr(ControlPlaneClient, "create_endpoint", create_endpoint)
    monkeypatch.setattr(ControlPlaneClient, "update_endpoint", update_endpoint)
    monkeypatch.setattr(ControlPlaneClient, "get_endpoint", lambda self, namespace, name: current)
    monkeypatch.setenv("ENDPOINTCTL_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setenv("ENDPOINTCTL_URL", URL)
    monkeypatch.setenv("ENDPOINTCTL_TOKEN", "epc_test")
    return sent


def _cli(*args: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-o", "json", *args])
    assert exit_info.value.code in (0, None)


HARDWARE = ("--accelerator", "cpu", "--vendor", "aws", "--region", "us-east-1", "--instance-type", "intel-icl",
            "--instance-size", "x1")
SDK_HARDWARE = {"accelerator": "cpu", "vendor": "aws", "region": "us-east-1", "instance_type": "intel-icl",
                "instance_size": "x1"}


@pytest.mark.parametrize(("cli_args", "sdk_kwargs"), [
    # A threshold alone: the CLI always meant pendingRequests; the SDK used to drop it.
    (("--scaling-threshold", "2"), {"scaling_threshold": 2.0}),
    (("--revision", "main", "--task", "text-generation", "--type", "public", "--min-replica", "0", "--max-replica",
      "3", "--scale-to-zero-timeout", "15", "--scaling-metric", "hardwareUsage", "--scaling-threshold", "80",
      "--image-url", "ghcr.io/x/y:1", "--image-port", "8080", "--health-route", "/healthz", "-e", "A=1",
      "--secret", "S=x", "--tag", "t1", "--tag", "t2"),
     {"revision": "main", "task": "text-generation", "type": "public", "min_replica": 0, "max_replica": 3,
      "scale_to_zero_timeout": 15, "scaling_metric": "hardwareUsage", "scaling_threshold": 80.0,
      "custom_image": {"url": "ghcr.io/x/y:1", "port": 8080, "healthRoute": "/healthz"}, "env": {"A": "1"},
      "secrets": {"S": "x"}, "tags": ["t1", "t2"]}),
])
def test_create_through_cli_and_sdk_sends_the_same_body(wire: list, cli_args: tuple[str, ...],
                                                       sdk_kwargs: dict[str, Any]) -> None:
    _cli("create", "e", "--repository", "gpt2", *HARDWARE, *cli_args, "-n", "alice")
    sdk.create_inference_endpoint("e", repository="gpt2", framework="pytorch", namespace="alice", **SDK_HARDWARE,
                                  **sdk_kwargs)
    (cli_method, cli_body), (sdk_method, sdk_body) = wire
    assert cli_method == sdk_method == "POST"
    assert cli_body == sdk_body


def test_update_through_cli_and_sdk_sends_the_same_body(wire: list) -> None:
    _cli("update", "e", "--max-replica", "3", "--revision", "r1", "--scaling-threshold", "4", "--image-url", "img:2",
         "--image-port", "81", "--tag", "x", "-n", "alice")
    sdk.update_inference_endpoint("e", namespace="alice", max_replica=3, revision="r1", scaling_threshold=4.0,
                                  custom_image={"url": "img:2", "port": 81}, tags=["x"])
    (_, cli_body), (_, sdk_body) = wire
    assert cli_body == sdk_body == {"compute": {"scaling": {"maxReplica": 3, "measure": {"pendingRequests": 4.0}}},
                                    "model": {"revision": "r1", "image": {"custom": {"url": "img:2", "port": 81}}},
                                    "tags": ["x"]}


def test_sdk_parallelism_update_keeps_the_current_image_variant(wire: list) -> None:
    sdk.update_inference_endpoint("e", namespace="alice", tensor_parallel_size=2)
    assert wire == [("PUT", {"model": {"image": {"tgi": {"url": "img:1", "tensorParallelSize": 2}}}})]


@pytest.mark.parametrize("body", [
    bodies.create_body("e", repository="gpt2", framework="pytorch", accelerator="cpu", instance_size="x1",
                       instance_type="intel-icl", region="us-east-1", vendor="aws"),
    bodies.create_body("e", repository="gpt2", framework="pytorch", accelerator="gpu", instance_size="x2",
                       instance_type="nvidia-a100", region="us-east-1", vendor="aws", min_replica=0, max_replica=2,
                       scaling_metric="hardwareUsage", scaling_threshold=70, scale_to_zero_timeout=15, revision="r",
                       task="text-generation", custom_image={"url": "img:1", "port": 80, "healthRoute": "/h"},
                       container_registry_username="u", container_registry_password="p",
                       container_command=["serve"], container_args=["--x"], env={"A": "1"}, secrets={"S": "s"},
                       type="private", domain="d.example", path="/p", cache_http_responses=False, tags=["t"],
                       private_link_account_id="123", private_link_region="us-east-1"),
])
def test_every_create_key_is_one_the_api_schema_reads(body: dict[str, Any]) -> None:
    # The schemas ignore unknown keys (as the hosted API does), so a misspelt key would be dropped silently:
    # parsing and dumping only what was set must give the body back unchanged.
    assert EndpointCreate.model_validate(body).model_dump(exclude_unset=True) == body


def test_every_update_key_is_one_the_api_schema_reads() -> None:
    body = bodies.update_body(
        accelerator="gpu", instance_size="x2", instance_type="nvidia-a100", min_replica=0, max_replica=2,
        scale_to_zero_timeout=15, repository="r", framework="pytorch", revision="v", task="t",
        custom_image={"url": "img:1"}, container_command=["a"], container_args=["b"], tensor_parallel_size=2,
        env={"A": "1"}, secrets={"S": "s"}, scaling_metric="pendingRequests", scaling_threshold=3, vendor="aws",
        region="eu", type="public", domain="d", path="/p", cache_http_responses=True, tags=["t"])
    assert body["model"]["image"] == {"custom": {"url": "img:1", "tensorParallelSize": 2}}
    assert EndpointUpdate.model_validate(body).model_dump(exclude_unset=True) == body


def test_one_client_one_error_family() -> None:
    assert sdk.ControlPlaneClient is ControlPlaneClient and sdk.EndpointctlHTTPError is EndpointctlHTTPError
    with pytest.raises(InvalidName) as info:
        ControlPlaneClient(URL).get_endpoint("alice", "../admin")
    assert isinstance(info.value, ValueError)


def test_cli_reports_client_errors_in_one_line(wire: list, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    response = httpx.Response(409, json={"error": "endpoint e already exists"})

    def conflict(self: ControlPlaneClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise EndpointctlHTTPError(409, error_message(response), response=response)

    monkeypatch.setattr(ControlPlaneClient, "create_endpoint", conflict)
    with pytest.raises(SystemExit) as exit_info:
        main(["create", "e", "--repository", "gpt2", *HARDWARE, "-n", "alice"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: endpoint e already exists"
    with pytest.raises(SystemExit) as exit_info:
        main(["events", "a/b", "-n", "alice"])  # refused before any request: this URL resolves nowhere
    assert exit_info.value.code == 2
