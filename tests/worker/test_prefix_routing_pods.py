"""On Kubernetes the gateway routes to each ready pod's own address (prefix-aware routing needs to tell replicas
apart; the Service would spread a prefix over every pod): the provider's status map records it."""

from __future__ import annotations

from common.kube_names import RUNTIME_CONTAINER
from common.observed import ObservedReplica, ObservedStatus
from worker.providers.kubernetes.status import observe


def pod(name: str, *, ip: str | None, ready: bool = True, port: int = 8080) -> dict:
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    spec = {"containers": [{"name": "sidecar", "ports": [{"name": "http", "containerPort": 1}]},
                           {"name": RUNTIME_CONTAINER, "ports": [{"name": "metrics", "containerPort": 9},
                                                                 {"name": "http", "containerPort": port}]}]}
    return {"metadata": {"name": name, "annotations": {"endpointctl.io/revision": "1"}}, "spec": spec,
            "status": status}


def test_ready_pods_carry_their_own_address_and_the_gateway_routes_to_them():
    deployment = {"metadata": {"name": "ep-1-x", "generation": 1, "annotations": {"endpointctl.io/revision": "1"}},
                  "spec": {"replicas": 4},
                  "status": {"observedGeneration": 1, "updatedReplicas": 4, "replicas": 4, "availableReplicas": 3}}
    o = observe(deployment=deployment, warnings=[], service_url="http://ep-1-x.ns.svc.cluster.local",
                pods=[pod("a", ip="10.1.0.7"), pod("b", ip="fd00::5", port=3000), pod("c", ip="10.1.0.9", ready=False),
                      pod("d", ip=None)])
    assert [r.url for r in o.replicas] == ["http://10.1.0.7:8080", "http://[fd00::5]:3000", None, None]
    observed = ObservedStatus(replicas=tuple(ObservedReplica(name=r.name, ready=r.ready, url=r.url)
                                             for r in o.replicas), service_url=o.service_url)
    assert observed.ready_urls() == ["http://10.1.0.7:8080", "http://[fd00::5]:3000"]
