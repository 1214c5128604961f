"""`logs --replica`: the local reader keeps one replica's lines (followed too) and refuses, before any line, a
replica the endpoint does not have (the API turns that into a 404)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from common.logreader import NoSuchReplica
from common.logreader.local import LocalLogReader


def _replicas(tmp_path: Path) -> Path:
    directory = tmp_path / "local-replicas" / "ep-3-c"
    directory.mkdir(parents=True)
    (directory / "r1-0.log").write_text("zero-a\nzero-b\n")
    (directory / "r1-1.log").write_text("one-a\none-b\n")
    return directory


def test_one_replica_only_and_unprefixed(tmp_path: Path) -> None:
    _replicas(tmp_path)
    reader = LocalLogReader(tmp_path)
    assert list(reader.logs("ep-3-c", replica="r1-1")) == ["one-a", "one-b"]
    assert list(reader.logs("ep-3-c", replica="r1-0", tail=1)) == ["zero-b"]
    assert sorted(reader.logs("ep-3-c")) == ["[r1-0] zero-a", "[r1-0] zero-b", "[r1-1] one-a", "[r1-1] one-b"]


def test_an_unknown_replica_is_refused_up_front(tmp_path: Path) -> None:
    _replicas(tmp_path)
    with pytest.raises(NoSuchReplica, match=r"no replica 'r9' \(replicas: r1-0, r1-1\)"):
        LocalLogReader(tmp_path).logs("ep-3-c", replica="r9")
    with pytest.raises(NoSuchReplica, match="none has written logs yet"):
        LocalLogReader(tmp_path).logs("ep-4-never", replica="r1-0")


def test_following_one_replica_ignores_the_others(tmp_path: Path) -> None:
    directory = _replicas(tmp_path)
    lines = LocalLogReader(tmp_path).logs("ep-3-c", replica="r1-0", follow=True)
    assert list(itertools.islice(lines, 2)) == ["zero-a", "zero-b"]
    assert next(lines) == ""  # the first heartbeat: the follower now watches the files' ends
    with (directory / "r1-1.log").open("a") as fh:
        fh.write("one-c\n")
    with (directory / "r1-0.log").open("a") as fh:
        fh.write("zero-c\n")
    got = next(line for line in lines if line)  # skip heartbeats
    assert got == "[r1-0] zero-c"


def test_since_keeps_the_lines_from_the_first_recent_stamp_on() -> None:
    from datetime import datetime

    from common.logreader.local import since

    lines = ["[supervisor 09:00:00] started runtime pid 1", "2026-12-04 09:00:05,100 INFO runtime: loading",
             "Loading weights: 100%", "2026-12-04 09:59:30,000 INFO runtime: ready",
             "[supervisor 09:59:40] health check passed", "an unstamped line"]
    now = datetime(2026, 12, 4, 10, 0, 0)
    assert since(lines, 60, now=now) == lines[3:]
    assert since(lines, 3600, now=now) == lines
    assert since(lines, 10, now=now) == []
    # A supervisor clock later than now is from yesterday (the log crossed midnight).
    assert since(["[supervisor 23:59:00] x", "[supervisor 00:00:30] y"], 120, now=datetime(2026, 12, 4, 0, 0, 40)) == [
        "[supervisor 23:59:00] x", "[supervisor 00:00:30] y"]


def test_the_reader_applies_since_to_each_replica(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    directory = _replicas(tmp_path)
    recent = (datetime.now() - timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S")
    (directory / "r1-0.log").write_text(f"2000-01-01 00:00:00,000 old\n{recent},000 new\nafter\n")
    assert list(LocalLogReader(tmp_path).logs("ep-3-c", replica="r1-0", since_seconds=3600)) == [f"{recent},000 new",
                                                                                                  "after"]
    assert list(LocalLogReader(tmp_path).logs("ep-3-c", replica="r1-1", since_seconds=3600)) == []
