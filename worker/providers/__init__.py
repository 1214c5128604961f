"""Providers: where replicas run. `get_provider` picks the configured one, once per process."""

from __future__ import annotations

import os
import shlex
import threading

from common.config import Settings, get_settings
from worker.providers.base import Provider

_providers: dict[tuple, Provider] = {}
_lock = threading.Lock()


def get_provider(settings: Settings | None = None) -> Provider:
    settings = settings or get_settings()
    key = (settings.provider, str(settings.data_dir))
    with _lock:
        provider = _providers.get(key)
        if provider is None:
            provider = _providers[key] = _make(settings)
        return provider


def _make(settings: Settings) -> Provider:
    if settings.provider == "local":
        from worker.providers.capacity import LocalCapacity
        from worker.providers.local import LocalProvider

        owner = os.environ.get("ENDPOINTCTL_OWNER_PID")
        command = shlex.split(settings.local_runtime_command) if settings.local_runtime_command else None
        capacity = LocalCapacity(replica_cpus=settings.local_replica_cpus,
                                 replica_memory_gb=settings.local_replica_memory_gb,
                                 reserve_cpus=settings.local_reserve_cpus,
                                 reserve_memory_gb=settings.local_reserve_memory_gb)
        return LocalProvider(settings.data_dir, owner_pid=int(owner) if owner else None, runtime_command=command,
                             forkserver=os.environ.get("ENDPOINTCTL_FORKSERVER"), capacity=capacity)
    if settings.provider == "kubernetes":
        from worker.providers.kubernetes import KubernetesProvider

        return KubernetesProvider.from_settings(settings)
    raise ValueError(f"unknown provider {settings.provider!r}; choose 'local' or 'kubernetes'")
