"""The internal token file of a data directory: every process of a stack that starts at the same moment ends up
with the same, non-empty token (the embedded stack starts the API, the worker and beat together)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.internal_token import InternalTokenError, _token_for

ROOT = Path(__file__).resolve().parents[2]
READ = "import sys; from common.internal_token import _token_for; print(_token_for(sys.argv[1], None))"


def test_processes_racing_for_a_fresh_data_dir_all_get_the_same_whole_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENDPOINTCTL_INTERNAL_TOKEN"} | {"PYTHONPATH": str(ROOT)}
    for attempt in range(5):
        data_dir = tmp_path / f"data{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", READ, str(data_dir)], env=env, stdout=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        tokens = {p.communicate(timeout=60)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        on_disk = (data_dir / "internal-token").read_text()
        assert tokens == {on_disk} and on_disk.startswith("epi_") and len(on_disk) > 40
        assert sorted(f.name for f in data_dir.iterdir()) == ["internal-token"]  # no scratch file left behind
        assert (data_dir / "internal-token").stat().st_mode & 0o777 == 0o600


def test_an_empty_token_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "internal-token").write_text("")
    with pytest.raises(InternalTokenError, match="is empty"):
        _token_for(str(tmp_path), None)
    assert _token_for(str(tmp_path / "other"), "from-env") == "from-env"
