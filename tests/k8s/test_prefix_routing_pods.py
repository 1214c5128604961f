"""On a real API server with kwok nodes: each ready pod of an endpoint is observed with its own address (pod IP and
the runtime's port), which the gateway routes to by prompt prefix instead of going through the Service."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.k8s.conftest import desired
from worker.providers.kubernetes.manifests import LABEL_ENDPOINT

pytestmark = pytest.mark.k8s


def test_ready_pods_are_observed_with_their_own_addresses(provider, kube_api, kube_namespace):
    d = desired("ep-21-routed", replicas=2)
    provider.apply(d)

    def addressed() -> bool:
        o = provider.observe("ep-21-routed")
        return o.ready_replicas == 2 and all(r.url for r in o.replicas if r.ready)

    assert provider.wait_until(addressed, 90.0), provider.observe("ep-21-routed")
    pods = k8s.CoreV1Api(kube_api).list_namespaced_pod(kube_namespace,
                                                        label_selector=f"{LABEL_ENDPOINT}=ep-21-routed").items
    expected = {f"http://{p.status.pod_ip}:{d.port}" for p in pods}
    assert {r.url for r in provider.observe("ep-21-routed").replicas} == expected and len(expected) == 2
