"""`endpointctl completion bash|zsh|fish` prints a script that really completes verbs, options and choices."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cli.conftest import ENDPOINTCTL, Cli


def _bash_complete(cli: Cli, words: list[str]) -> list[str]:
    """Source the printed script in bash and run its completion function on `words`, as Tab would."""
    script = cli("completion", "bash").stdout
    words_literal = " ".join(f"'{w}'" for w in words)
    program = (f"{script}\nCOMP_WORDS=({words_literal}); COMP_CWORD={len(words) - 1}; "
               f"_endpointctl_completion endpointctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    env = {**cli.env, "PATH": f"{ENDPOINTCTL.rsplit('/', 1)[0]}:{cli.env.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60, cwd=cli.home)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_verbs_options_and_choices(bare_cli: Cli) -> None:
    assert _bash_complete(bare_cli, ["endpointctl", "desc"]) == ["describe"]
    assert "scale-to-zero" in _bash_complete(bare_cli, ["endpointctl", "sc"])
    assert "--wake" in _bash_complete(bare_cli, ["endpointctl", "wait", "x", "--w"])
    assert _bash_complete(bare_cli, ["endpointctl", "list", "-o", ""]) == ["table", "wide", "json", "yaml"]


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --command")])
def test_each_shell_gets_its_script(bare_cli: Cli, shell: str, marker: str) -> None:
    r = bare_cli("completion", shell)
    assert r.code == 0 and marker in r.stdout and "_ENDPOINTCTL_COMPLETE" in r.stdout, r
    assert bare_cli("completion", "powershell").code == 2
