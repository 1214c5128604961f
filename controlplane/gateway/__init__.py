"""Data-plane gateway: proxies <base>/endpoints/<namespace>/<name>/... to the endpoint's ready replicas.

Filled in by the worker/gateway issue; the API app includes `router` so endpoint URLs resolve from day one.
"""

from fastapi import APIRouter

router = APIRouter()
