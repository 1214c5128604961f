"""Domain errors of the control plane; `controlplane.api.errors` maps each to one HTTP status in one place. They
live here because shared code raises them too: the catalog (`InvalidSpec`, `CatalogError`), which the worker
resolves hardware with.

    ControlPlaneError
    ├── InvalidSpec          400  a request that parses but cannot be accepted (names the parameter)
    │   └── RefusedSpec      422  a value we never accept from a tenant: an env name that configures an
    │                             interpreter or loader, a provider-owned flag, a value over a size limit
    ├── AlreadyRunning       400  resume of a running endpoint (body says "already running": clients rely on it)
    ├── NotAuthenticated     401
    ├── Forbidden            403  the token cannot act on this namespace / object
    ├── QuotaExceeded        403  the namespace's quota (endpoints, accelerators) would be exceeded
    ├── NotFound             404
    ├── Conflict             409  name taken, or deletion of that name still pending
    ├── ServiceUnavailable   503  a dependency (provider layer, database) is not available
    └── CatalogError         500-free: raised at start-up for a bad catalog file
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    status_code = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidSpec(ControlPlaneError):
    status_code = 400


class RefusedSpec(InvalidSpec):
    status_code = 422


class AlreadyRunning(ControlPlaneError):
    status_code = 400


class NotAuthenticated(ControlPlaneError):
    status_code = 401


class Forbidden(ControlPlaneError):
    status_code = 403


class QuotaExceeded(ControlPlaneError):
    status_code = 403


class NotFound(ControlPlaneError):
    status_code = 404


class Conflict(ControlPlaneError):
    status_code = 409


class ServiceUnavailable(ControlPlaneError):
    status_code = 503


class CatalogError(ControlPlaneError):
    status_code = 500
