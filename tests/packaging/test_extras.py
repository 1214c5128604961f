"""The base install is the CLI and the SDK: they import nothing an extra brings, and a verb that needs an extra
says which one in one line. (tests/packaging/test_bare_install.py checks the same on a real bare install.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli import extras
from cli.main import main

ROOT = Path(__file__).resolve().parents[2]

# Top-level modules that only the extras install (and their heaviest dependencies).
EXTRA_MODULES = ("torch", "transformers", "xgrammar", "gguf", "accelerate", "safetensors", "tokenizers",
                 "huggingface_hub", "jinja2", "jsonschema", "sqlalchemy", "fastapi", "starlette", "uvicorn",
                 "celery", "kombu", "alembic", "psycopg", "redis", "httptools", "prometheus_client", "orjson",
                 "cryptography", "pydantic_settings", "kubernetes", "common", "worker", "runtime")


def _python_without(blocked: tuple[str, ...], body: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter in which the top-level modules `blocked` cannot be imported, as if the
    extras that bring them were not installed."""
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)


def test_cli_and_sdk_import_nothing_from_an_extra() -> None:
    """With every extra's modules made unimportable, the CLI's help and the SDK still load (in a fresh process)."""
    proc = _python_without(EXTRA_MODULES, """
        import controlplane
        from controlplane import list_inference_endpoints, create_inference_endpoint
        from controlplane.sdk import InferenceEndpointError
        assert issubclass(InferenceEndpointError, Exception)
        from cli.main import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
        assert not loaded, loaded
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Usage: endpointctl" in proc.stdout


@pytest.mark.parametrize(("argv", "line"), [
    (["up"], "error: 'endpointctl up' needs the server and runtime extras: pip install 'endpointctl[server,runtime]'"),
    (["demo"], "error: 'endpointctl demo' needs the server and runtime extras: pip install 'endpointctl[server,runtime]'"),
    (["runtime", "serve", "--help"], "error: 'endpointctl runtime serve' needs the runtime extra: pip install 'endpointctl[runtime]'"),
    (["dev", "tiny-model", "DIR"], "error: 'endpointctl dev tiny-model' needs the runtime extra: pip install 'endpointctl[runtime]'"),
    (["dev", "model", "smollm2-135m-instruct", "DIR"], "error: 'endpointctl dev model' needs the runtime extra: pip install 'endpointctl[runtime]'"),
    (["dev", "cluster", "kubeconfig"], "error: 'endpointctl dev cluster' needs the server and kubernetes extras: pip install 'endpointctl[server,kubernetes]'"),
])
def test_a_verb_whose_extra_is_missing_names_it_in_one_line(argv: list[str], line: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Only the extras' own distributions count as missing; the base ones (typer, httpx...) are there.
    by_extra = extras._requirements_by_extra()
    assert by_extra is not None, "endpointctl is not installed in this venv"
    missing = {name for extra in ("server", "kubernetes", "runtime") for name in by_extra[extra]}
    monkeypatch.setattr(extras, "_installed", lambda name: name not in missing)
    monkeypatch.delenv("ENDPOINTCTL_PROVIDER", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == line


def test_up_on_kubernetes_needs_the_kubernetes_extra_not_the_runtime(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    by_extra = extras._requirements_by_extra()
    assert by_extra is not None
    monkeypatch.setattr(extras, "_installed", lambda name: name not in by_extra["kubernetes"])
    monkeypatch.setenv("ENDPOINTCTL_PROVIDER", "kubernetes")
    with pytest.raises(SystemExit) as exit_info:
        main(["up"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "error: 'endpointctl up' needs the kubernetes extra: pip install 'endpointctl[kubernetes]'")


def test_the_extras_are_read_from_the_installed_metadata() -> None:
    by_extra = extras._requirements_by_extra()
    assert by_extra is not None
    assert "torch" in by_extra["runtime"] and "sqlalchemy" in by_extra["server"] and by_extra["kubernetes"] == ("kubernetes",)
    assert extras.missing_extras("server", "kubernetes", "runtime") == ()  # this venv has everything


RUNTIME_ONLY_MODULES = ("torch", "transformers", "xgrammar", "gguf", "accelerate", "safetensors", "tokenizers",
                        "jinja2", "jsonschema", "runtime")  # huggingface_hub is in both: the catalog reads config.json


def test_the_control_plane_image_needs_no_runtime_extra(tmp_path: Path) -> None:
    """`.[server,kubernetes]` (docker/Dockerfile.controlplane) is enough for the API, the worker and both providers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDPOINTCTL_")}
    env["ENDPOINTCTL_DATA_DIR"] = str(tmp_path)
    proc = _python_without(RUNTIME_ONLY_MODULES, """
        for module in ("controlplane.__main__", "controlplane.app", "controlplane.migrate", "worker.celery_app",
                       "worker.tasks", "worker.providers.local", "worker.providers.kubernetes.provider",
                       "cli.main", "cli.up"):
            importlib.import_module(module)
        from controlplane.app import create_app
        create_app()
    """, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


SERVER_ONLY_MODULES = ("sqlalchemy", "alembic", "celery", "kombu", "psycopg", "redis", "httptools", "cryptography",
                       "kubernetes", "common", "controlplane", "worker")


def test_the_runtime_image_needs_no_server_extra() -> None:
    """`.[runtime]` (docker/Dockerfile.runtime) is enough for `python -m runtime` and its routes and engine."""
    proc = _python_without(SERVER_ONLY_MODULES, """
        for module in ("runtime.launch", "runtime.app", "runtime.engine.scheduler", "runtime.engine.loader",
                       "runtime.guidance", "runtime.openai.routes", "runtime.tgi.routes", "runtime.realmodels"):
            importlib.import_module(module)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
