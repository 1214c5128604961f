"""`pip install endpointctl` with no extra, for real: the wheel built from this checkout, installed with its base
dependencies (from PyPI, pinned by constraints.txt, through pip's cache) into a fresh virtualenv that cannot see
this checkout. There, `endpointctl --help`, `endpointctl list` against a live control plane and the SDK work, the
extras' packages are absent, and a server verb names its extra in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.cli.conftest import start_controlplane
from tests.fixtures.processes import stop_process_group

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BARE_MAX_BYTES = 150 * 1024 * 1024  # the CLI and the SDK: tens of MB, where the full install is gigabytes


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _site_packages(venv: Path) -> Path:
    (path,) = venv.glob("lib/python*/site-packages")
    return path


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _source_copy(dest: Path) -> Path:
    """What the wheel is built from (pyproject's packages, README), away from the checkout so the build's `build/`
    and egg-info never land in the working tree other runs use."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return dest


def test_bare_install_is_the_cli_and_the_sdk(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("ENDPOINTCTL_", "PIP_"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(tmp_path / "home"),
                "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
                "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")})
    (tmp_path / "home").mkdir()
    (tmp_path / "src").mkdir()
    source = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                  str(source)], cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("endpointctl-*.whl")

    venv = tmp_path / "bare"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    python, endpointctl = venv / "bin" / "python", venv / "bin" / "endpointctl"
    installed = _run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
                     cwd=tmp_path, env=env, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]

    # Nothing of an extra came along (cwd is tmp_path: the checkout is not on sys.path).
    probe = _run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
                  "'sqlalchemy', 'fastapi', 'celery', 'kubernetes', 'huggingface_hub') if u.find_spec(m)])"],
                 cwd=tmp_path, env=env)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe

    helped = _run([str(endpointctl), "--help"], cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "Usage: endpointctl" in helped.stdout, helped

    # A server verb says which extra to install, in one line, and fails.
    up = _run([str(endpointctl), "up"], cwd=tmp_path, env=env)
    assert up.returncode == 1, up
    assert up.stderr.strip() == ("error: 'endpointctl up' needs the server and runtime extras: "
                                 "pip install 'endpointctl[server,runtime]'")
    tiny = _run([str(endpointctl), "dev", "tiny-model", str(tmp_path / "tiny")], cwd=tmp_path, env=env)
    assert tiny.returncode == 1 and tiny.stderr.strip() == (
        "error: 'endpointctl dev tiny-model' needs the runtime extra: pip install 'endpointctl[runtime]'"), tiny

    # Against a live control plane (run by the full environment): the SDK creates and lists, the CLI lists.
    data = tmp_path / "cp"
    data.mkdir()
    proc, cp = start_controlplane(data, token="admin-bare-install-token-0123456789")
    try:
        client_env = {**env, "ENDPOINTCTL_URL": cp.url, "ENDPOINTCTL_TOKEN": cp.admin_token}
        sdk = _run([str(python), "-c", (
            "from controlplane import create_inference_endpoint, list_inference_endpoints\n"
            "ep = create_inference_endpoint('bare-sdk', repository='gpt2', framework='pytorch', accelerator='cpu',"
            " instance_size='x1', instance_type='intel-icl', region='us-east-1', vendor='aws')\n"
            "print(ep.status, [e.name for e in list_inference_endpoints()])\n"
            "try:\n"
            "    ep.client\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")], cwd=tmp_path, env=client_env)
        assert sdk.returncode == 0, sdk.stderr[-3000:]
        assert sdk.stdout.splitlines()[0] == "pending ['bare-sdk']"
        # huggingface_hub's clients are an option of the SDK, not a dependency: asking for one says so.
        assert "pip install huggingface_hub" in sdk.stdout.splitlines()[1]
        listed = _run([str(endpointctl), "list"], cwd=tmp_path, env=client_env)
        assert listed.returncode == 0, listed
        assert "bare-sdk" in listed.stdout and "pending" in listed.stdout
    finally:
        stop_process_group(proc)

    bare = _du(_site_packages(venv))
    full = _du(Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages")
    print(f"\nsite-packages: bare install {bare / 2**20:.1f} MiB, full environment {full / 2**20:.1f} MiB")
    assert bare < BARE_MAX_BYTES
