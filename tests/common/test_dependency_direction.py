"""Dependencies run one way: `controlplane` and `worker` stand on `common`, never on each other; `runtime` stands
alone; only the provider modules talk to Kubernetes and only the engine (and the offline model builder) loads torch.

Two views of the same rule: an AST scan of every module (lazy imports inside functions included), and real
imports in a fresh interpreter, which also catch what a module drags in through its dependencies.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "controlplane", "worker", "runtime", "cli", "migrations")

# package -> packages of this repository it must never import
FORBIDDEN = {
    "common": {"controlplane", "worker", "runtime", "cli"},
    "controlplane": {"worker", "runtime", "cli"},
    "worker": {"controlplane", "cli"},
    "runtime": {"common", "controlplane", "worker", "cli"},
    "migrations": {"controlplane", "worker", "runtime", "cli"},
}
# third-party module -> where it may be imported, and why
CONFINED = {
    "kubernetes": ("worker/providers/kubernetes/", "common/logreader/kubernetes.py"),
    "torch": ("runtime/engine/", "runtime/tinymodel.py"),  # tinymodel: the offline builder of the test model
    "celery": ("common/queue.py", "worker/", "controlplane/services/enqueue.py"),
}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports stay inside their package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _scan() -> dict[str, dict[str, set[str]]]:
    """{source file: {imported top-level name: modules}} for every module of the repository's packages."""
    found: dict[str, dict[str, set[str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            by_top: dict[str, set[str]] = defaultdict(set)
            for name in _imports(path):
                by_top[name.split(".")[0]].add(name)
            found[path.relative_to(ROOT).as_posix()] = by_top
    return found


def package_edges() -> dict[str, list[str]]:
    """Which of the repository's packages each one imports: the dependency direction, as measured."""
    edges: dict[str, set[str]] = defaultdict(set)
    for source, by_top in _scan().items():
        package = source.split("/")[0]
        edges[package].update(top for top in by_top if top in PACKAGES and top != package)
    return {package: sorted(edges.get(package, ())) for package in PACKAGES}


def test_packages_import_one_way() -> None:
    wrong = [f"{source} imports {', '.join(sorted(modules))}"
             for source, by_top in _scan().items()
             for top, modules in by_top.items()
             if top in FORBIDDEN.get(source.split("/")[0], ())]
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(CONFINED))
def test_heavy_libraries_stay_in_their_modules(module: str) -> None:
    allowed = CONFINED[module]
    wrong = [source for source, by_top in _scan().items()
             if module in by_top and not source.startswith(allowed)]
    assert wrong == [], f"{module} imported outside {allowed}: {wrong}"


def test_the_direction_is_what_the_architecture_says() -> None:
    edges = package_edges()
    assert edges["common"] == [] and edges["runtime"] == []
    assert edges["controlplane"] == ["common", "migrations"]
    assert edges["worker"] == ["common"]
    assert edges["migrations"] == ["common"]


def _modules_after(code: str) -> list[str]:
    """Top-level packages of this repository present in sys.modules after running `code` in a fresh interpreter."""
    probe = (code + "\nimport json, sys\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(PACKAGES)!r})))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_api_runs_without_the_worker(tmp_path: Path) -> None:
    """Every controlplane module imported, the app built, an endpoint created and its logs read (the request that
    used to build a worker provider in the API process): still no `worker` module loaded."""
    code = f"""
import importlib, pkgutil
from pathlib import Path
from fastapi.testclient import TestClient
import controlplane
from common.config import Settings
from common.db import session_factory
from common.models import Endpoint
from controlplane import migrate
from controlplane.app import create_app
settings = Settings(data_dir=Path({str(tmp_path)!r}), database_url="sqlite:///{tmp_path}/db.sqlite", provider="local",
                    admin_token="t0ken", redis_url=None)
migrate.upgrade(settings)
body = {json.dumps(_CREATE)}
with TestClient(create_app(settings, enqueue=lambda _id: True)) as http:
    auth = {{"authorization": "Bearer t0ken"}}
    assert http.post("/v2/endpoint/admin", json=body, headers=auth).status_code == 201
    with session_factory(settings)() as session:
        key = session.query(Endpoint).one().provider_key
    (settings.data_dir / "local-replicas" / key).mkdir(parents=True)
    (settings.data_dir / "local-replicas" / key / "r0.log").write_text("hello from the replica\\n")
    r = http.get("/v2/endpoint/admin/logs-probe/logs", headers=auth)
    assert r.status_code == 200 and r.text == "hello from the replica\\n", (r.status_code, r.text)
for info in pkgutil.walk_packages(controlplane.__path__, "controlplane."):
    importlib.import_module(info.name)
"""
    loaded = _modules_after(code)
    assert "controlplane" in loaded and "worker" not in loaded, loaded


_CREATE = {"compute": {"accelerator": "cpu", "instanceSize": "x1", "instanceType": "intel-icl",
                       "scaling": {"maxReplica": 1, "minReplica": 1}},
           "model": {"framework": "pytorch", "repository": "gpt2", "image": {"huggingface": {}}},
           "name": "logs-probe", "provider": {"region": "us-east-1", "vendor": "aws"}, "type": "protected"}


def test_the_worker_runs_without_the_api() -> None:
    code = """
import pkgutil, importlib, worker
for info in pkgutil.walk_packages(worker.__path__, "worker."):
    importlib.import_module(info.name)
"""
    loaded = _modules_after(code)
    assert "worker" in loaded and "controlplane" not in loaded, loaded


def test_common_stands_alone() -> None:
    code = """
import pkgutil, importlib, common
for info in pkgutil.walk_packages(common.__path__, "common."):
    importlib.import_module(info.name)
"""
    assert _modules_after(code) == ["common"]


def test_a_reconcile_message_is_written_in_one_place() -> None:
    """Every reconcile request (API writes, gateway wakes, the worker's requeues and resyncs) goes through
    `common.queue.enqueue_reconcile`, so its retry policy and failure handling exist once."""
    senders = []
    for source in _scan():
        tree = ast.parse((ROOT / source).read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "send_task"
                    and node.args and ast.unparse(node.args[0]).split(".")[-1] == "RECONCILE"):
                senders.append(f"{source}:{node.lineno}")
    assert len(senders) == 1 and senders[0].startswith("common/queue.py:"), senders
