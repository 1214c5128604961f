"""Endpoint logs come from the provider layer, which lives in the worker package.

The import is lazy so the API runs (and answers 503 for logs) where the worker's providers are not installed or
not configured; secret values are masked in every line, since a container may echo its environment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from common.config import Settings
from common.errors import ServiceUnavailable
from common.models import Endpoint
from common.redaction import redactor_for

log = logging.getLogger(__name__)


def _provider(settings: Settings):  # noqa: ANN202 - worker.providers.base.Provider, imported lazily
    try:
        from worker.providers import get_provider  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ServiceUnavailable(f"logs are unavailable: the provider layer cannot be loaded ({exc})") from exc
    try:
        return get_provider(settings)
    except Exception as exc:  # noqa: BLE001 - any provider set-up failure means "no logs right now"
        raise ServiceUnavailable(f"logs are unavailable: provider {settings.provider!r} "
                                 f"could not be initialised ({type(exc).__name__}: {exc})") from exc


def endpoint_logs(settings: Settings, endpoint: Endpoint, *, tail: int = 200, follow: bool = False) -> Iterator[str]:
    """Log lines of the endpoint's replicas (oldest first), secrets masked; raises ServiceUnavailable up front."""
    provider = _provider(settings)
    redact = redactor_for(endpoint.secrets, endpoint.image_credentials)
    try:
        lines = provider.logs(endpoint.provider_key, tail=tail, follow=follow)
    except Exception as exc:  # noqa: BLE001 - ProviderError and its kin become one 503
        raise ServiceUnavailable(f"logs are unavailable: {type(exc).__name__}: {exc}") from exc

    def masked() -> Iterator[str]:
        try:
            for line in lines:
                line = redact(line) or ""
                yield line if (not line or line.endswith("\n")) else line + "\n"  # "" = heartbeat, sent as nothing
        except Exception as exc:  # noqa: BLE001 - the stream has started; end it with a readable line
            log.warning("log stream of %s ended: %s", endpoint.provider_key, exc)
            yield f"[endpointctl] log stream ended: {type(exc).__name__}\n"

    return masked()
