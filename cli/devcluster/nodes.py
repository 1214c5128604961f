"""Node manifests for kwok nodes that look like the GPU nodes of a managed Kubernetes service.

Labels follow what real GPU nodes carry: `node.kubernetes.io/instance-type` (set by the cloud provider), the
NVIDIA GPU feature discovery labels (`nvidia.com/gpu.product`, `nvidia.com/gpu.count`, `nvidia.com/gpu.present`)
and an `nvidia.com/gpu` extended resource in capacity/allocatable (advertised by the device plugin). GPU nodes
carry the `nvidia.com/gpu=present:NoSchedule` taint that GKE and AKS put on GPU pools, so only pods that
tolerate it (the provider's GPU pods do) land there. kwok nodes get kwok's management annotation; the kwok
`NoSchedule` taint is left out on purpose: this cluster has no real kubelets for it to protect.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
POOL_LABEL = "endpointctl.io/devcluster-pool"


@dataclass(frozen=True)
class NodePool:
    name: str
    instance_type: str
    gpus: int
    gpu_product: str | None = None
    cpus: int | None = None  # default: sized like cloud GPU instances (16 vCPUs, 64 GiB per GPU), 32/256Gi for CPU
    memory: str | None = None

    @property
    def product(self) -> str | None:
        """`nvidia-l4` -> `NVIDIA-L4` unless given (the label value GPU feature discovery would report)."""
        if self.gpus == 0:
            return None
        return self.gpu_product or self.instance_type.upper()


def node_manifest(name: str, pool: NodePool, *, kwok_annotation: tuple[str, str]) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": pool.instance_type,
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    cpus = pool.cpus or max(32, 16 * pool.gpus)
    memory = pool.memory or f"{max(256, 64 * pool.gpus)}Gi"
    resources = {"cpu": str(cpus), "memory": memory, "pods": "110", "ephemeral-storage": "1Ti"}
    taints = []
    if pool.gpus:
        labels.update({
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool.product or "",
            "nvidia.com/gpu.count": str(pool.gpus),
        })
        resources["nvidia.com/gpu"] = str(pool.gpus)
        taints.append(GPU_TAINT)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {kwok_annotation[0]: kwok_annotation[1], "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }
