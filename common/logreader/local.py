"""The local provider's replica logs: one file per replica under `<data_dir>/local-replicas/<key>/`, written by its
supervisor (`worker/providers/local_replica.py`). Reading them needs no process of the worker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

REPLICAS_DIR = "local-replicas"
# How long a follower may stay silent before it yields a heartbeat.
HEARTBEAT_SECONDS = 1.0
POLL_SECONDS = 0.25


def tail_lines(path: Path, n: int) -> list[str]:
    """The last `n` lines of a log file (from its last 64 KiB); none when it cannot be read."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-n:]


class LocalLogReader:
    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir) / REPLICAS_DIR

    def logs(self, key: str, *, tail: int = 200, follow: bool = False, replica: str | None = None) -> Iterator[str]:
        directory = self.root / key
        files = sorted(directory.glob("r*.log"), key=lambda p: p.stat().st_mtime) if directory.is_dir() else []
        if replica is not None:
            chosen = [p for p in files if p.stem == replica]
            if not chosen:
                from common.logreader import NoSuchReplica

                names = ", ".join(p.stem for p in files) or "none has written logs yet"
                raise NoSuchReplica(f"no replica {replica!r} (replicas: {names})")
            files = chosen
        # Checked above, before the first line: the lines themselves come from a generator.
        return self._lines(directory, files, tail=tail, follow=follow, replica=replica)

    def _lines(self, directory: Path, files: list[Path], *, tail: int, follow: bool,
               replica: str | None) -> Iterator[str]:
        multi = len(files) > 1
        for path in files:
            for line in tail_lines(path, tail):
                yield f"[{path.stem}] {line}" if multi else line
        if not follow:
            return
        offsets = {p: p.stat().st_size for p in files}
        quiet_since = time.monotonic()
        while directory.is_dir():
            for path in sorted(directory.glob("r*.log")):
                if replica is not None and path.stem != replica:
                    continue
                offset = offsets.get(path, 0)
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read(size - offset).decode("utf-8", "replace")
                    offsets[path] = size
                    quiet_since = time.monotonic()
                    for line in chunk.splitlines():
                        yield f"[{path.stem}] {line}"
            if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
                # An empty item is a heartbeat: it writes nothing, but it hands control back to the consumer, so a
                # follower whose client has left is noticed within a second instead of holding a thread forever.
                quiet_since = time.monotonic()
                yield ""
            time.sleep(POLL_SECONDS)
