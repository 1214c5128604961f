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


class InternalTokenError(Exception):
    """The data directory's token file cannot be used (unreadable, or empty: written by a process that died)."""


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return ""


@lru_cache(maxsize=4)
def _token_for(data_dir: str, env_value: str | None) -> str:
    """The token file appears whole or not at all: written to a private temporary file, then hard-linked into place
    (which fails if another process got there first, whose token is then read). Creating the file and writing it
    afterwards let a process starting at the same moment read it empty, and cache that for its lifetime: every
    health probe then sent `Authorization: Bearer ` and no endpoint of that stack ever became ready."""
    if env_value:
        return env_value
    path = os.path.join(data_dir, "internal-token")
    if value := _read(path):
        return value
    os.makedirs(data_dir, exist_ok=True)
    value = "epi_" + secrets.token_urlsafe(32)
    scratch = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(scratch, path)
        except FileExistsError:  # another process won the race: use its token, complete by construction
            value = _read(path)
    finally:
        os.unlink(scratch)
    if not value:
        raise InternalTokenError(f"{path} is empty; remove it and restart endpointctl (or set ENDPOINTCTL_INTERNAL_TOKEN)")
    return value


def internal_token(settings: Settings) -> str:
    return _token_for(str(settings.data_dir), os.environ.get("ENDPOINTCTL_INTERNAL_TOKEN"))


def is_internal_token(settings: Settings, raw: str | None) -> bool:
    # Compared as bytes: a header holds any latin-1 text, and compare_digest refuses a str that is not ASCII.
    return bool(raw) and hmac.compare_digest(raw.encode("utf-8", "surrogatepass"),
                                             internal_token(settings).encode("utf-8", "surrogatepass"))
