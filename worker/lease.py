"""One reconcile per endpoint at a time.

The lock matches the deployment: with Redis (production, possibly many worker hosts) a Redis lock with a TTL, so a
crashed worker's lease expires; on the embedded default (one host by definition) an flock on a file in the data
directory, which the kernel releases the moment the holding process dies. Either way a reconcile that finds the
lease taken simply skips: the holder is doing the same level-triggered work.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from common.config import Settings

LEASE_SECONDS = 120


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


@contextmanager
def endpoint_lease(settings: Settings, endpoint_id: int) -> Iterator[bool]:
    """Yields True when this caller holds the lease for `endpoint_id`, False when someone else does."""
    if settings.redis_url:
        lock = _redis(settings.redis_url).lock(f"endpointctl:lease:endpoint:{endpoint_id}", timeout=LEASE_SECONDS)
        acquired = lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    lock.release()
                except Exception:  # noqa: BLE001 - an expired lease is simply gone
                    pass
        return
    directory = settings.data_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"endpoint-{endpoint_id}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
