"""Catalog entry → the provider's `HardwareSpec` (GPU counts, node selector), resolved at reconcile time."""

from __future__ import annotations

from common.catalog import load_catalog
from common.config import Settings
from worker.providers.base import HardwareSpec


def resolve_hardware(settings: Settings, vendor: str, region: str, instance_type: str, instance_size: str) -> HardwareSpec:
    inst = load_catalog(settings.hardware_catalog).resolve(
        vendor=vendor, region=region, instance_type=instance_type, instance_size=instance_size)
    return HardwareSpec(
        vendor=vendor, region=region, instance_type=inst.instanceType, instance_size=inst.instanceSize,
        accelerator=inst.accelerator, num_accelerators=inst.numAccelerators, num_cpus=inst.numCpus,
        memory_gb=inst.memoryGb, gpu_memory_gb=inst.gpuMemoryGb, node_selector=dict(inst.nodeSelector),
        gpu_product=inst.gpuProduct,
    )
