"""The runtime's folder listing explains itself, and its entry points still lead where they should."""

from __future__ import annotations

import ast
import importlib.util
import re
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


DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|this (?:machine|VM|box)\b|on this CPU|measured (?:on|here)\b|\btok/s\b",
                   re.IGNORECASE)


def test_the_runtime_docs_hold_no_dated_measurements():
    """Figures of one machine on one day rot when the machine changes: the benchmarks print them
    (``bench/README.md``); the runtime's docs and docstrings say what the code does and why."""
    sources = [p for p in RUNTIME.rglob("*") if p.suffix in {".py", ".c", ".md"} and "__pycache__" not in p.parts]
    found = [f"{p.relative_to(RUNTIME)}:{n}: {line.strip()}"
             for p in sources for n, line in enumerate(p.read_text().splitlines(), 1) if DATED.search(line)]
    assert found == []


LAYERS = {
    "engine": {"engine", "config", "errors"},
    "guidance": {"guidance", "engine", "errors", "jsonbody"},
}
"""What each lower package may import from the runtime: the engine knows no protocol, guidance no route."""


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    return {name.split(".")[1] for name in names if name.startswith("runtime.")}


def test_dependencies_point_down_into_guidance_and_the_engine():
    wrong = {}
    for package, allowed in LAYERS.items():
        for path in (RUNTIME / package).rglob("*.py"):
            extra = _runtime_imports(path) - allowed
            if extra:
                wrong[path.relative_to(RUNTIME).as_posix()] = sorted(extra)
    assert wrong == {}
