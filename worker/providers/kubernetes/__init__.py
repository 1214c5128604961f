"""Kubernetes provider: `provider.py` (the Provider), `manifests.py` (pure rendering), `status.py` (pure status
mapping), `cache.py` (the informer-style watch cache)."""

from worker.providers.kubernetes.provider import KubernetesProvider, PoolCapacity, options_from_settings

__all__ = ["KubernetesProvider", "PoolCapacity", "options_from_settings"]
