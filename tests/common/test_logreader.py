"""The narrow log reader the API uses: the local replicas' files (tail, one prefix per replica when there are
several, follow with heartbeats), and a clear refusal where the configured provider's client is not installed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.config import Settings
from common.logreader import LogReadError, log_reader
from common.logreader.local import LocalLogReader

ROOT = Path(__file__).resolve().parents[2]


def _replica_dir(data_dir: Path, key: str) -> Path:
    directory = data_dir / "local-replicas" / key
    directory.mkdir(parents=True)
    return directory


def test_tail_of_one_replica_is_unprefixed(tmp_path: Path) -> None:
    (_replica_dir(tmp_path, "ep-1-a") / "r1-0.log").write_text("one\ntwo\nthree\n")
    reader = log_reader(Settings(data_dir=tmp_path, provider="local"))
    assert isinstance(reader, LocalLogReader)
    assert list(reader.logs("ep-1-a", tail=2)) == ["two", "three"]
    assert list(reader.logs("ep-9-none")) == []


def test_several_replicas_are_prefixed_oldest_file_first(tmp_path: Path) -> None:
    directory = _replica_dir(tmp_path, "ep-2-b")
    (directory / "r1-0.log").write_text("first\n")
    time.sleep(0.01)
    (directory / "r1-1.log").write_text("second\n")
    assert list(LocalLogReader(tmp_path).logs("ep-2-b")) == ["[r1-0] first", "[r1-1] second"]


def test_follow_yields_new_lines_and_heartbeats(tmp_path: Path) -> None:
    log = _replica_dir(tmp_path, "ep-3-c") / "r1-0.log"
    log.write_text("old\n")
    lines = LocalLogReader(tmp_path).logs("ep-3-c", follow=True)
    assert next(lines) == "old"
    threading.Timer(0.3, lambda: log.open("a").write("new\n")).start()
    assert next(lines) == "[r1-0] new"
    assert next(lines) == ""  # quiet for a second: a heartbeat hands control back to the consumer
    lines.close()


def test_an_unknown_provider_is_a_log_read_error(tmp_path: Path) -> None:
    with pytest.raises(LogReadError, match="unknown provider"):
        log_reader(Settings(data_dir=tmp_path, provider="nonexistent"))


def test_without_the_kubernetes_client_the_reader_says_which_extra_to_install(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["kubernetes"] = None  # as in an install without the kubernetes extra
from pathlib import Path
from common.config import Settings
from common.logreader import LogReadError, log_reader
try:
    log_reader(Settings(data_dir=Path({str(tmp_path)!r}), provider="kubernetes"))
except LogReadError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "install endpointctl[kubernetes]" in result.stdout
