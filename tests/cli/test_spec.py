"""The create/update bodies the CLI sends: the shape huggingface_hub sends, and PUT bodies with only what was given."""

from __future__ import annotations

import pytest

from cli.errors import CliError
from cli.spec import EndpointOptions, create_body, parse_pairs, pick_compute, update_body

CATALOG = {
    "vendors": [
        {"name": "aws", "regions": [{"name": "us-east-1", "computes": [
            {"id": "a-cpu", "accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1", "status": "available"},
            {"id": "a-a100-x1", "accelerator": "gpu", "instanceType": "nvidia-a100", "instanceSize": "x1", "status": "available"},
            {"id": "a-a100-x2", "accelerator": "gpu", "instanceType": "nvidia-a100", "instanceSize": "x2", "status": "available"},
        ]}]},
        {"name": "local", "regions": [{"name": "local", "computes": [
            {"id": "l-x1", "accelerator": "cpu", "instanceType": "cpu", "instanceSize": "x1", "status": "not_available"},
            {"id": "l-x2", "accelerator": "cpu", "instanceType": "cpu", "instanceSize": "x2", "status": "available"},
        ]}]},
    ]
}


def test_create_body_has_every_key_huggingface_hub_always_sends() -> None:
    body = create_body("e1", EndpointOptions(repository="/models/tiny"), catalog=CATALOG)
    assert body == {
        "name": "e1",
        "type": "authenticated",
        "compute": {
            "accelerator": "cpu", "instanceType": "cpu", "instanceSize": "x2",
            "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": None},
        },
        "model": {"repository": "/models/tiny", "revision": None, "framework": "pytorch", "image": {"huggingface": {}}},
        "provider": {"vendor": "local", "region": "local"},
    }


def test_create_body_seed_example_with_everything_given() -> None:
    opts = EndpointOptions(
        repository="gpt2", revision="main", framework="pytorch", task="text-generation", accelerator="gpu",
        vendor="aws", region="us-east-1", instance_type="nvidia-a100", instance_size="x2", min_replica=0,
        max_replica=2, scale_to_zero_timeout=15, type="protected", image_url="ghcr.io/x/y:1", image_port=8080,
        health_route="/health", env={"A": "1"}, secrets={"S": "x"}, tags=["t"],
    )
    body = create_body("e2", opts, catalog=None)
    assert body["compute"] == {"accelerator": "gpu", "instanceType": "nvidia-a100", "instanceSize": "x2",
                               "scaling": {"minReplica": 0, "maxReplica": 2, "scaleToZeroTimeout": 15}}
    assert body["model"] == {"repository": "gpt2", "revision": "main", "framework": "pytorch", "task": "text-generation",
                             "image": {"custom": {"url": "ghcr.io/x/y:1", "port": 8080, "healthRoute": "/health"}},
                             "env": {"A": "1"}, "secrets": {"S": "x"}}
    assert body["provider"] == {"vendor": "aws", "region": "us-east-1"}
    assert body["type"] == "protected" and body["tags"] == ["t"]


def test_pick_compute_honours_pins_and_prefers_available() -> None:
    assert pick_compute(CATALOG, EndpointOptions(instance_type="nvidia-a100"))[2]["id"] == "a-a100-x1"
    assert pick_compute(CATALOG, EndpointOptions(accelerator="gpu", instance_size="x2"))[2]["id"] == "a-a100-x2"
    assert pick_compute(CATALOG, EndpointOptions(vendor="aws"))[2]["id"] == "a-cpu"
    with pytest.raises(CliError, match=r"no hardware in the catalog matches vendor=local, accelerator=gpu \(vendors: local, aws\)"):
        pick_compute(CATALOG, EndpointOptions(vendor="local", accelerator="gpu"))


def test_update_body_sends_only_what_was_given() -> None:
    assert update_body(EndpointOptions(max_replica=3)) == {"compute": {"scaling": {"maxReplica": 3}}}
    assert update_body(EndpointOptions(revision="abc", env={"A": "2"}, tags=["x"])) == {
        "model": {"revision": "abc", "env": {"A": "2"}}, "tags": ["x"]}
    assert update_body(EndpointOptions(instance_size="x4", region="eu")) == {
        "compute": {"instanceSize": "x4"}, "provider": {"region": "eu"}}
    with pytest.raises(CliError, match="nothing to update"):
        update_body(EndpointOptions())


@pytest.mark.parametrize(
    ("opts", "fragment"),
    [
        (EndpointOptions(repository="r", min_replica=2, max_replica=1), "must not exceed --max-replica"),
        (EndpointOptions(repository="r", min_replica=-1), "--min-replica must not be negative"),
        (EndpointOptions(repository="r", scale_to_zero_timeout=-5), "--scale-to-zero-timeout must not be negative"),
        (EndpointOptions(repository="r", image_port=80), "give --image-url too"),
    ],
)
def test_bad_options_are_usage_errors(opts: EndpointOptions, fragment: str) -> None:
    with pytest.raises(CliError, match=fragment) as info:
        create_body("e", opts, catalog=CATALOG)
    assert info.value.exit_code == 2


def test_parse_pairs() -> None:
    assert parse_pairs(["A=1", "B=x=y", "C="], option="--env") == {"A": "1", "B": "x=y", "C": ""}
    assert parse_pairs(None, option="--env") is None
    with pytest.raises(CliError, match="--secret expects KEY=VALUE, got 'oops'"):
        parse_pairs(["oops"], option="--secret")


def test_scaling_measure() -> None:
    body = create_body("e", EndpointOptions(repository="r", scaling_threshold=1.5), catalog=CATALOG)
    assert body["compute"]["scaling"]["measure"] == {"pendingRequests": 1.5}
    body = create_body("e", EndpointOptions(repository="r", scaling_metric="hardwareUsage", scaling_threshold=80), catalog=CATALOG)
    assert body["compute"]["scaling"]["measure"] == {"hardwareUsage": 80}
    assert "measure" not in create_body("e", EndpointOptions(repository="r"), catalog=CATALOG)["compute"]["scaling"]
    assert update_body(EndpointOptions(scaling_metric="hardwareUsage")) == {"compute": {"scaling": {"measure": {"hardwareUsage": None}}}}
    with pytest.raises(CliError, match="--scaling-threshold must be greater than 0"):
        update_body(EndpointOptions(scaling_threshold=0))
