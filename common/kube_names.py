"""Names the Kubernetes provider gives the objects of an endpoint, in one place because two readers select by them:
the provider (`worker/providers/kubernetes/`) and the API's log reader (`common/logreader/kubernetes.py`)."""

from __future__ import annotations

GROUP = "endpointctl.io"
LABEL_ENDPOINT = f"{GROUP}/endpoint"  # the key: selects everything of one endpoint
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "endpointctl"
RUNTIME_CONTAINER = "runtime"


def endpoint_selector(key: str) -> str:
    """Label selector of one endpoint's objects (ours only)."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENDPOINT}={key}"
