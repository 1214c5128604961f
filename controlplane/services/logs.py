"""Endpoint logs for the API, through the narrow log reader of `common.logreader` (never a worker provider: the API
holds no write rights and starts no watches). Secret values are masked in every line, since a container may echo
its environment; any failure to read becomes one 503.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from common.config import Settings
from common.errors import NotFound, ServiceUnavailable
from common.logreader import LogReadError, NoSuchReplica, log_reader
from common.models import Endpoint
from common.redaction import redactor_for

log = logging.getLogger(__name__)


def endpoint_logs(settings: Settings, endpoint: Endpoint, *, tail: int = 200, follow: bool = False,
                  replica: str | None = None, since_seconds: int | None = None) -> Iterator[str]:
    """Log lines of the endpoint's replicas (oldest first), secrets masked; raises NotFound (no such replica) or
    ServiceUnavailable up front."""
    redact = redactor_for(endpoint.secrets, endpoint.image_credentials)
    try:
        # Set-up and the pod list happen here, before the response starts; the log requests run as it streams.
        lines = log_reader(settings).logs(endpoint.provider_key, tail=tail, follow=follow, replica=replica,
                                          since_seconds=since_seconds)
    except NoSuchReplica as exc:
        raise NotFound(f"endpoint {endpoint.namespace}/{endpoint.name}: {exc}") from exc
    except (LogReadError, OSError) as exc:
        raise ServiceUnavailable(f"logs are unavailable: {exc}") from exc

    def masked() -> Iterator[str]:
        try:
            for line in lines:
                yield _line(redact(line) or "")
        except (LogReadError, OSError) as exc:  # the stream has started; end it with a readable line
            log.warning("log stream of %s ended: %s", endpoint.provider_key, exc)
            yield f"[endpointctl] log stream ended: {type(exc).__name__}\n"

    return masked()


def _line(line: str) -> str:
    return line if (not line or line.endswith("\n")) else line + "\n"  # "" = heartbeat, sent as nothing
