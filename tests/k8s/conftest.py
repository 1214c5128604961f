"""Helpers for the Kubernetes provider tests: a provider bound to the test's namespace, desired specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cli.devcluster import DevCluster
from worker.providers.base import DesiredDeployment, HardwareSpec
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import RenderOptions


L4 = HardwareSpec(vendor="aws", region="us-east-1", instance_type="nvidia-l4", instance_size="x1", accelerator="gpu",
                  num_accelerators=1, num_cpus=4, memory_gb=16, gpu_memory_gb=24, gpu_product="NVIDIA-L4")
CPU = HardwareSpec(vendor="aws", region="us-east-1", instance_type="intel-icl", instance_size="x1", accelerator="cpu",
                   num_accelerators=0, num_cpus=1, memory_gb=2)


def desired(key: str = "ep-1-demo", *, revision: int = 1, replicas: int = 1, hardware: HardwareSpec = L4,
            image: dict | None = None, **overrides) -> DesiredDeployment:
    base = DesiredDeployment(
        endpoint_id=int(key.split("-")[1]) if key.split("-")[1].isdigit() else 1, namespace="alice",
        name=key.split("-", 2)[-1], key=key, revision=revision, replicas=replicas, repository="acme/tiny-llama",
        model_revision="0123456789abcdef", framework="pytorch", task="text-generation",
        image=image if image is not None else {"huggingface": {}}, command=None, args=None,
        env={"MAX_INPUT_LENGTH": "512", "MAX_TOTAL_TOKENS": "1024"}, secrets={"OPENAI_KEY": "s3cr3t"},
        health_route="/health", port=8080, hardware=hardware)
    return dataclasses.replace(base, **overrides)


def with_gpus(n: int) -> HardwareSpec:
    return dataclasses.replace(L4, num_accelerators=n, instance_size=f"x{n}")


@pytest.fixture
def kube_api(kube_cluster: DevCluster) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def make_provider(kube_cluster: DevCluster, kube_namespace: str) -> Iterator[Callable[..., KubernetesProvider]]:
    """Providers for this test's namespace (options overridable); all closed at teardown."""
    made: list[KubernetesProvider] = []

    def make(**option_overrides) -> KubernetesProvider:
        options = RenderOptions(namespace=kube_namespace, runtime_image="ghcr.io/endpointctl/runtime:test",
                                node_failure_toleration_seconds=2, hub_token="hf_test_token")
        options = dataclasses.replace(options, **option_overrides)
        api = k8s_config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
        provider = KubernetesProvider(api, options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make_provider: Callable[..., KubernetesProvider]) -> KubernetesProvider:
    return make_provider()
