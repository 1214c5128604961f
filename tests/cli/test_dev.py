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
