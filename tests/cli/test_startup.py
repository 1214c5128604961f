"""Every verb starts without the heavy modules (issue 20, item 10).

`endpointctl --help`, each verb's `--help` and a verb that fails before any request load what the CLI needs to parse
its arguments, never the server, worker, runtime or Kubernetes stacks: each of those is imported by the verb that
uses it, when it runs. Checked in a fresh interpreter per command by the modules it ended with, not by a clock (the
figures are in the issue's closing note: `python -X importtime -m cli.main --help`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.conftest import REPO_ROOT

HEAVY = ("torch", "transformers", "kubernetes", "sqlalchemy", "fastapi", "starlette", "uvicorn", "celery", "kombu",
         "numpy", "alembic", "openai", "huggingface_hub", "cli.up", "cli.demo", "worker", "runtime", "common.config")
# Loaded by the verbs that use them only: the cluster tool's code (and the YAML and urllib it pulls in), and the HTTP
# client's httpx, which the first request imports.
LAZY = ("cli.devcluster", "yaml", "httpx")

PROBE = """
import json, sys
from cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""


def modules_after(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "COLUMNS": "100"})
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("args", [
    ("--help",), ("list", "--help"), ("create", "--help"), ("up", "--help"), ("down", "--help"), ("chat", "--help"),
    ("logs", "--help"), ("hardware", "--help"), ("dev", "--help"),
    ("config", "--help"), ("token", "--help"),
])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    modules = modules_after(*args)
    assert "cli.main" in modules
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize("args", [("--help",), ("list", "--help"), ("create", "--help"), ("up", "--help")])
def test_the_cluster_tool_and_httpx_are_loaded_only_when_used(args: tuple[str, ...]) -> None:
    assert loaded(modules_after(*args), LAZY) == []
    assert "cli.devcluster.commands" in modules_after("dev", "--help")
    # A verb that talks to the API loads httpx (here it finds no control plane and says so).
    assert "httpx" in modules_after("--url", "http://127.0.0.1:9", "list")
