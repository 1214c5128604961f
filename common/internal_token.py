"""The internal service token: how the worker probes endpoint URLs through the gateway like a client would.

Taken from ENDPOINTCTL_INTERNAL_TOKEN when set (several hosts: give every process the same value), otherwise
generated once into the data directory, which the embedded stack's processes share.
"""

from __future__ import annotations

import hmac
import os
import secrets
from functools import lru_cache

from common.config import Settings


@lru_cache(maxsize=4)
def _token_for(data_dir: str, env_value: str | None) -> str:
    if env_value:
        return env_value
    path = os.path.join(data_dir, "internal-token")
    try:
        with open(path) as fh:
            value = fh.read().strip()
            if value:
                return value
    except FileNotFoundError:
        pass
    value = "epi_" + secrets.token_urlsafe(32)
    os.makedirs(data_dir, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its token
        with open(path) as fh:
            return fh.read().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def internal_token(settings: Settings) -> str:
    return _token_for(str(settings.data_dir), os.environ.get("ENDPOINTCTL_INTERNAL_TOKEN"))


def is_internal_token(settings: Settings, raw: str | None) -> bool:
    # Compared as bytes: a header holds any latin-1 text, and compare_digest refuses a str that is not ASCII.
    return bool(raw) and hmac.compare_digest(raw.encode("utf-8", "surrogatepass"),
                                             internal_token(settings).encode("utf-8", "surrogatepass"))
