"""endpointctl control plane: the v2 API, its database, and a Python SDK.

    from controlplane import create_inference_endpoint, get_inference_endpoint, list_inference_endpoints

The SDK names are imported lazily, so importing any `controlplane` module (every API process does) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ControlPlaneClient", "EndpointctlHTTPError", "InferenceEndpoint", "InferenceEndpointError",
           "InferenceEndpointTimeoutError", "create_inference_endpoint", "delete_inference_endpoint",
           "get_inference_endpoint", "list_inference_endpoints", "pause_inference_endpoint",
           "resume_inference_endpoint", "scale_to_zero_inference_endpoint", "update_inference_endpoint"]

if TYPE_CHECKING:
    from controlplane.sdk import (ControlPlaneClient, EndpointctlHTTPError, InferenceEndpoint,
                                  InferenceEndpointError, InferenceEndpointTimeoutError, create_inference_endpoint,
                                  delete_inference_endpoint, get_inference_endpoint, list_inference_endpoints,
                                  pause_inference_endpoint, resume_inference_endpoint,
                                  scale_to_zero_inference_endpoint, update_inference_endpoint)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from controlplane import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'controlplane' has no attribute {name!r}")
