"""What the reconciler asks of a provider is in the `Provider` protocol, and both providers answer it: whether
`running` needs the health route through the gateway, the cluster's accelerators for the catalog, and how the
provider will run a spec differently from what it says (one-time events)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from kubernetes import client as k8s

from common.config import Settings
from common.db import make_engine, session_factory, session_scope
from common.models import Base, Endpoint, Event
from worker.providers.base import ObservedDeployment, Provider, ReplicaStatus, SpecNotice
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import RenderOptions
from worker.providers.local import LocalProvider
from worker.reconcile import build_deployment, reconcile_endpoint

SPEC = {"compute": {"accelerator": "gpu", "instanceType": "nvidia-l4", "instanceSize": "x1",
                    "scaling": {"minReplica": 1, "maxReplica": 1}},
        "model": {"repository": "acme/tiny", "framework": "pytorch", "task": "text-generation",
                  "image": {"custom": {"url": "ghcr.io/acme/server:1", "port": 8080}}},
        "provider": {"vendor": "aws", "region": "us-east-1"}}


@pytest.fixture
def local(tmp_path: Path) -> LocalProvider:
    return LocalProvider(tmp_path / "data")


@pytest.fixture
def kubernetes() -> KubernetesProvider:
    # Built, never started: the abilities below need no API server.
    return KubernetesProvider(k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9")),
                              RenderOptions(namespace="endpoints", runtime_image="runtime:test"))


@pytest.fixture
def deployment(tmp_path: Path):
    row = Endpoint(id=3, namespace="alice", name="demo", type="authenticated", spec=SPEC, spec_revision=1, secrets={})
    return build_deployment(row, Settings(data_dir=tmp_path), replicas=1)


def test_both_providers_implement_the_protocol(local: LocalProvider, kubernetes: KubernetesProvider) -> None:
    assert isinstance(local, Provider) and isinstance(kubernetes, Provider)


def test_local_replicas_are_verified_through_the_gateway_and_pods_by_their_probe(
        local: LocalProvider, kubernetes: KubernetesProvider, tmp_path: Path) -> None:
    assert local.verify_through_gateway is True
    assert kubernetes.verify_through_gateway is False
    opted_in = KubernetesProvider(k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9")),
                                  RenderOptions(namespace="endpoints", runtime_image="runtime:test"),
                                  verify_through_gateway=True)
    assert opted_in.verify_through_gateway is True


def test_only_a_cluster_reports_accelerators(local: LocalProvider, kubernetes: KubernetesProvider) -> None:
    assert local.accelerator_usage() is None
    # The node and pod caches filled by hand stand in for their watches (tests/k8s runs them for real).
    kubernetes._started = kubernetes._nodes_started = True
    kubernetes.nodes.upsert({"metadata": {"name": "n1", "resourceVersion": "1",
                                          "labels": {"node.kubernetes.io/instance-type": "nvidia-l4"}},
                             "status": {"allocatable": {"nvidia.com/gpu": "4"},
                                        "conditions": [{"type": "Ready", "status": "True"}]}})
    kubernetes.pods.upsert({"metadata": {"name": "p1", "resourceVersion": "2"},
                            "spec": {"nodeName": "n1",
                                     "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                            "status": {"phase": "Running"}})
    for reflector in (kubernetes.nodes, kubernetes.pods):
        reflector._synced.set()
    assert kubernetes.accelerator_usage() == {"nvidia-l4": {"allocatable": 4, "used": 1, "max_allocatable_per_node": 4,
                                                            "max_free_per_node": 3}}


def test_the_local_provider_says_what_it_runs_instead(local: LocalProvider, kubernetes: KubernetesProvider,
                                                      deployment) -> None:
    notices = local.spec_notices(deployment)
    assert [n.reason for n in notices] == ["CustomImageNotRunnable", "LocalHardware"]
    assert "ghcr.io/acme/server:1" in notices[0].message and "nvidia-l4 x1" in notices[1].message
    cpu_bundled = dataclasses.replace(deployment, image={"huggingface": {}},
                                      hardware=dataclasses.replace(deployment.hardware, accelerator="cpu",
                                                                   vendor="local", region="local"))
    assert local.spec_notices(cpu_bundled) == []
    assert kubernetes.spec_notices(deployment) == []


class FakeProvider:
    """A provider whose replica is ready at once; what it says about itself is set per test."""

    name = "fake"

    def __init__(self, *, verify_through_gateway: bool, notices: list[SpecNotice]) -> None:
        self.verify_through_gateway = verify_through_gateway
        self.notices = notices
        self.replicas = 0

    def observe(self, key: str) -> ObservedDeployment:
        if not self.replicas:
            return ObservedDeployment(exists=False)
        return ObservedDeployment(exists=True, revision=1, desired_replicas=self.replicas,
                                  replicas=(ReplicaStatus(name="r0", ready=True, url="http://127.0.0.1:9", revision=1,
                                                          phase="Running"),))

    def apply(self, desired) -> None:
        self.replicas = desired.replicas

    def delete(self, key: str) -> None:
        self.replicas = 0

    def logs(self, key: str, *, tail: int = 200, follow: bool = False):
        return iter(())

    def list_keys(self) -> list[str]:
        return []

    def accelerator_usage(self) -> None:
        return None

    def spec_notices(self, desired) -> list[SpecNotice]:
        return self.notices

    def engine(self, desired) -> str:
        return "fake engine"


@pytest.fixture
def factory(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite")
    Base.metadata.create_all(make_engine(settings))
    factory = session_factory(settings)
    with session_scope(factory) as session:
        session.add(Endpoint(id=3, namespace="alice", name="demo", type="authenticated", spec=SPEC, secrets={}))
    return settings, factory


def _events(factory) -> list[tuple[str, str]]:
    with session_scope(factory) as session:
        return [(e.reason, e.message) for e in session.query(Event).order_by(Event.id)]


def test_the_reconciler_trusts_a_provider_that_verifies_readiness_itself(factory) -> None:
    settings, sessions = factory
    provider = FakeProvider(verify_through_gateway=False, notices=[SpecNotice("Odd", "runs it oddly")])
    assert isinstance(provider, Provider)
    reconcile_endpoint(sessions, provider, settings, 3)
    outcome = reconcile_endpoint(sessions, provider, settings, 3)
    assert outcome.state == "running"  # no gateway runs here: a probe through it would have failed
    with session_scope(sessions) as session:
        assert session.get(Endpoint, 3).message == "engine: fake engine"  # which engine serves, in status.message
    assert ("Odd", "runs it oddly") in _events(sessions)
    reconcile_endpoint(sessions, provider, settings, 3)
    assert _events(sessions).count(("Odd", "runs it oddly")) == 1  # once per spec revision


def test_the_reconciler_probes_through_the_gateway_when_the_provider_asks(factory) -> None:
    settings, sessions = factory
    settings = settings.model_copy(update={"public_url": "http://127.0.0.1:9"})  # nothing listens there
    provider = FakeProvider(verify_through_gateway=True, notices=[])
    reconcile_endpoint(sessions, provider, settings, 3)
    outcome = reconcile_endpoint(sessions, provider, settings, 3)
    assert outcome.state == "initializing"
    assert [reason for reason, _ in _events(sessions)].count("CustomImageNotRunnable") == 0
