"""Every file the dashboard serves ships in the wheel: pyproject's package-data globs for `controlplane.dashboard`
match each of them (a new folder of assets would otherwise work from a checkout and 404 from an install)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "controlplane" / "dashboard"


def _matches(relative: PurePosixPath, pattern: str) -> bool:
    parts = PurePosixPath(pattern).parts
    return len(parts) == len(relative.parts) and all(fnmatchcase(p, q) for p, q in zip(relative.parts, parts))


def test_every_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["controlplane.dashboard"]
    files = [PurePosixPath(p.relative_to(PACKAGE).as_posix()) for p in (PACKAGE / "static").rglob("*") if p.is_file()]
    assert len(files) >= 8
    missing = [str(f) for f in files if not any(_matches(f, pattern) for pattern in patterns)]
    assert missing == []
