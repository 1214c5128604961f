"""The runtime's folder listing explains itself, and its entry points still lead where they should."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import runtime

RUNTIME = Path(runtime.__file__).parent

MIRRORED = {"__init__", "__main__", "errors", "protocol", "routes"}
"""Names a package may share with another on purpose: ``openai/`` and ``tgi/`` mirror each other (wire models in
``protocol.py``, the router in ``routes.py``), and a package's own exceptions live in its ``errors.py``."""


def _stem(name: str) -> str:
    return name.removesuffix("s")  # constraint / constraints are one name to a reader


def test_no_two_runtime_modules_share_a_name():
    where: dict[str, list[str]] = defaultdict(list)
    for path in RUNTIME.rglob("*.py"):
        where[_stem(path.stem)].append(path.relative_to(RUNTIME).as_posix())
    shared = {stem: paths for stem, paths in where.items() if len(paths) > 1}
    assert set(shared) <= {_stem(name) for name in MIRRORED}, shared


def test_the_forkserver_preloads_runtime_modules_that_exist():
    from cli.up import DEFAULT_PRELOAD

    names = [name for name in DEFAULT_PRELOAD.split(",") if name.startswith("runtime")]
    assert names and [name for name in names if importlib.util.find_spec(name) is None] == []


def test_the_launcher_sets_the_openmp_policy_before_torch_loads():
    """``main`` sets OMP_WAIT_POLICY, which OpenMP reads once, when torch loads it: importing the launcher must
    not import torch."""
    code = "import sys, runtime.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=RUNTIME.parent)
    assert out.stdout.strip() == "False"
