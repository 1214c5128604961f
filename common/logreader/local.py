"""The local provider's replica logs: one file per replica under `<data_dir>/local-replicas/<key>/`, written by its
supervisor (`worker/providers/local_replica.py`). Reading them needs no process of the worker."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
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


# The two clocks a replica's log carries: the runtime's logging (`2026-12-04 15:00:40,869 ...`) and its
# supervisor's (`[supervisor 15:00:41] ...`, time of day only); both local time. Other lines (progress bars,
# tracebacks) belong with the last stamped line before them.
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})|^\[supervisor (\d{2}:\d{2}:\d{2})\]")


def _stamp(line: str, now: datetime) -> datetime | None:
    found = _STAMP.match(line)
    if not found:
        return None
    if found.group(1):
        return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    clock = datetime.strptime(found.group(2), "%H:%M:%S").time()
    stamped = datetime.combine(now.date(), clock)
    return stamped - timedelta(days=1) if stamped > now + timedelta(minutes=1) else stamped  # before midnight


def since(lines: list[str], seconds: int, *, now: datetime | None = None) -> list[str]:
    """The lines written in the last `seconds`: from the first stamped line at or after the cutoff on (a log
    file is appended in order); none when no stamped line is that recent."""
    now = now or datetime.now()
    cutoff = now - timedelta(seconds=seconds)
    for i, line in enumerate(lines):
        stamped = _stamp(line, now)
        if stamped is not None and stamped >= cutoff.replace(microsecond=0):
            return lines[i:]
    return []


class LocalLogReader:
    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir) / REPLICAS_DIR

    def logs(self, key: str, *, tail: int = 200, follow: bool = False, replica: str | None = None,
             since_seconds: int | None = None) -> Iterator[str]:
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
        return self._lines(directory, files, tail=tail, follow=follow, replica=replica, since_seconds=since_seconds)

    def _lines(self, directory: Path, files: list[Path], *, tail: int, follow: bool, replica: str | None,
               since_seconds: int | None) -> Iterator[str]:
        multi = len(files) > 1
        for path in files:
            lines = tail_lines(path, tail)
            for line in lines if since_seconds is None else since(lines, since_seconds):
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
