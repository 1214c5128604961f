"""Reading an endpoint's replica logs, and nothing else: what the API needs to answer `GET .../logs`.

The API does not build a provider for this. A provider holds write rights and, on Kubernetes, starts watches on
Deployments, Pods, Secrets, Services and Events as soon as it is used; a log reader lists the endpoint's pods and
reads their logs (RBAC: pods list/get and pods/log get, the chart's API Role), or reads the local replicas' log
files. The providers' own `logs()` use the same readers, so each way of reading logs is written once.

    LogReader                  the protocol: logs(key, tail=, follow=) -> lines
    ├── LocalLogReader         <data_dir>/local-replicas/<key>/r*.log (local.py)
    └── KubernetesLogReader    pods list + pods/log get (kubernetes.py; the only module here importing kubernetes)
    LogReadError               the cluster refused or failed; `__cause__` is its exception
    └── NoSuchReplica          `replica=` names no replica of the endpoint (the API answers 404)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from common.config import Settings
from common.logreader.local import LocalLogReader


class LogReadError(Exception):
    """Logs could not be read; the underlying exception is `__cause__` (callers translate it at their boundary)."""


class NoSuchReplica(LogReadError):
    """The endpoint has no replica of that name; raised before the first line, so the API can answer 404."""


class LogReader(Protocol):
    def logs(self, key: str, *, tail: int = 200, follow: bool = False, replica: str | None = None,
             since_seconds: int | None = None) -> Iterator[str]:
        """Log lines of the endpoint's replicas (only `replica`'s when given; of the tail, only those written in the
        last `since_seconds`), oldest first, each prefixed with its replica when there are several; `follow` keeps yielding new lines, and an empty string now and then while
        quiet (a heartbeat that lets the consumer notice a departed client)."""


_readers: dict[tuple, LogReader] = {}
_lock = threading.Lock()


def log_reader(settings: Settings) -> LogReader:
    """The reader for the configured provider, one per process and configuration (a Kubernetes client keeps a
    connection pool)."""
    key = (settings.provider, str(settings.data_dir), str(settings.kubeconfig), settings.k8s_context,
           settings.k8s_namespace)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = _make(settings)
        return reader


def _make(settings: Settings) -> LogReader:
    if settings.provider == "local":
        return LocalLogReader(settings.data_dir)
    if settings.provider == "kubernetes":
        try:
            from common.logreader.kubernetes import KubernetesLogReader
        except ImportError as exc:
            raise LogReadError(f"the Kubernetes client is not installed here ({exc}); install endpointctl[kubernetes]"
                               ) from exc
        return KubernetesLogReader.from_settings(settings)
    raise LogReadError(f"unknown provider {settings.provider!r}; choose 'local' or 'kubernetes'")
