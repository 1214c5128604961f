"""What the reconciler hands the provider for an endpoint row: the custom image's registry credentials included
(and only for a custom image)."""

from __future__ import annotations

from common.config import Settings
from common.models import Endpoint
from worker.reconcile import build_deployment


def _row(image: dict, credentials: dict | None) -> Endpoint:
    spec = {"compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1",
                        "scaling": {"minReplica": 1, "maxReplica": 1}},
            "model": {"repository": "acme/tiny", "framework": "pytorch", "task": "text-generation", "image": image,
                      "env": {"MAX_TOTAL_TOKENS": "512"}},
            "provider": {"vendor": "aws", "region": "us-east-1"}}
    return Endpoint(id=7, namespace="alice", name="demo", type="authenticated", spec=spec, spec_revision=3,
                    secrets={"TOKEN": "s"}, image_credentials=credentials)


def test_custom_image_credentials_reach_the_provider(tmp_path):
    settings = Settings(data_dir=tmp_path)
    image = {"custom": {"url": "ghcr.io/acme/server:1", "port": 8080, "env": {"A": "1"}}}
    d = build_deployment(_row(image, {"username": "bot", "password": "pw"}), settings, replicas=1)
    assert d.registry_credentials == {"username": "bot", "password": "pw"}
    assert d.key == "ep-7-demo" and d.port == 8080 and d.env == {"A": "1", "MAX_TOTAL_TOKENS": "512"}
    assert "pw" not in repr(d.secrets)


def test_credentials_are_dropped_for_other_images_and_a_missing_password_is_not_invented(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert build_deployment(_row({"huggingface": {}}, {"username": "bot", "password": "pw"}), settings,
                            replicas=1).registry_credentials is None
    custom = {"custom": {"url": "ghcr.io/acme/server:1"}}
    assert build_deployment(_row(custom, {"username": "bot", "password": None}), settings,
                            replicas=1).registry_credentials == {"username": "bot"}


def test_names_the_api_refuses_never_reach_a_provider_even_from_a_stored_row(tmp_path):
    """A row written before the policy existed (or around the API) still cannot configure a replica's interpreter
    or loader, on either provider: the reconciler drops those names and says which."""
    from worker.reconcile import refused_env_names

    row = _row({"custom": {"url": "ghcr.io/acme/server:1", "env": {"LD_PRELOAD": "/tmp/evil.so"}}}, None)
    row.spec["model"]["env"].update(PYTHONWARNINGS="all:0:antigravity.x:0:0", BROWSER="/bin/sh -c id #%s")
    row.secrets = {"TOKEN": "s", "PYTHONPATH": "/tmp/evil"}
    d = build_deployment(row, Settings(data_dir=tmp_path), replicas=1)
    assert d.env == {"MAX_TOTAL_TOKENS": "512"} and d.secrets == {"TOKEN": "s"}
    assert refused_env_names(row) == ["BROWSER", "LD_PRELOAD", "PYTHONPATH", "PYTHONWARNINGS"]
