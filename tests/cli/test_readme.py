"""Every fenced `bash` / `python` block of the README runs as shown (issue 20, item 2).

The quick start ("On one machine") runs as one bash script (`set -euo pipefail`) in an empty HOME, exactly as
written; then the HfApi example ("What you get") runs against the stack and model the quick start describes. What
differs from a user's machine is only the environment: `ENDPOINTCTL_PORT` (another stack may hold 8000 on a test
machine; the Python example's `http://127.0.0.1:8000` is replaced by that address, its one substitution) and
`ENDPOINTCTL_MODEL_CACHE` (the wheel the session already fetched, so nothing is downloaded). Blocks that cannot run
here are listed in NOT_RUN with the reason; a new block that is neither run nor listed fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import REPO_ROOT, _base_env
from tests.fixtures.processes import free_port

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent

# The first line of each block that is not run, and why.
NOT_RUN = {
    "scripts/demo.sh": "sets up the virtualenv and runs `endpointctl demo`, which tests/e2e/test_demo.py runs; "
                       "its `scripts/test.sh` line runs this whole suite",
    "scripts/bootstrap.sh && source .venv/bin/activate": "installs the system packages and the virtualenv this "
                                                         "suite is already running in",
}
QUICK_START = ("On one machine", "bash", "endpointctl up --detach")
HFAPI = ("What you get", "python", "from pathlib import Path")


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced bash/python block, indentation removed."""
    blocks = []
    section = ""
    fence = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\s*$")
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        match = fence.match(lines[i])
        if match and match["lang"]:
            indent = len(match["indent"])
            body = []
            i += 1
            while not fence.match(lines[i]):
                body.append(lines[i][indent:])
                i += 1
            if match["lang"] in ("bash", "python"):
                blocks.append((section, match["lang"], "\n".join(body) + "\n"))
        i += 1
    return blocks


def block(section: str, lang: str, first_line: str) -> str:
    found = [code for s, lg, code in fenced_blocks(README.read_text()) if (s, lg) == (section, lang)
             and code.splitlines()[0].startswith(first_line)]
    assert len(found) == 1, f"README has no single {lang} block in {section!r} starting with {first_line!r}"
    return found[0]


def test_every_block_is_run_or_says_why_not() -> None:
    blocks = fenced_blocks(README.read_text())
    assert len(blocks) >= 3
    run = {block(*QUICK_START), block(*HFAPI)}
    for section, lang, code in blocks:
        first = code.splitlines()[0]
        assert code in run or any(first.startswith(prefix) for prefix in NOT_RUN), (
            f"README block in {section!r} ({lang}) starting {first!r} is neither run by tests/cli/test_readme.py "
            f"nor listed in NOT_RUN with the reason")


def _env(home: Path, port: int) -> dict[str, str]:
    from runtime.realmodels import cache_root

    env = _base_env(home)
    for name in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ENDPOINTCTL_PORT=str(port), COLUMNS="120",
               ENDPOINTCTL_MODEL_CACHE=str(cache_root()), PYTHONUNBUFFERED="1")
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, transcript: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    with transcript.open("a") as out:
        out.write(proc.stdout)
    return proc


@pytest.mark.slow
@pytest.mark.realmodel
def test_quick_start_and_hfapi_example_run_as_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = _env(home, port)
    transcript = tmp_path / "quickstart.txt"
    data_dir = home / ".local" / "share" / "endpointctl"
    try:
        # bash -v echoes each line as it runs it: the transcript reads like the README.
        script = "set -euo pipefail\n" + block(*QUICK_START)
        proc = _run(["bash", "-v", "-c", script], env, home, transcript, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:]
        out = proc.stdout
        assert f"endpointctl is up at http://127.0.0.1:{port}" in out and f"http://127.0.0.1:{port}/docs" in out
        assert f"stopped endpointctl up on {data_dir}" in out
        assert (home / "models" / "smollm2" / "config.json").exists()

        # The HfApi example, on the quick start's stack and model.
        up = _run([str(BIN / "endpointctl"), "up", "--detach"], env, home, transcript, timeout=300)
        assert up.returncode == 0, up.stdout
        example = block(*HFAPI)
        assert example.count('"http://127.0.0.1:8000"') == 1
        example = example.replace('"http://127.0.0.1:8000"', f'"http://127.0.0.1:{port}"')
        with transcript.open("a") as out_file:
            out_file.write("$ python  # the README's HfApi example\n")
        proc = _run([sys.executable, "-c", example], env, home, transcript, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "ChatCompletionOutput" in proc.stdout and "content=" in proc.stdout, proc.stdout[-4000:]
    finally:
        _run([str(BIN / "endpointctl"), "down"], env, home, transcript, timeout=180)
        if os.environ.get("ENDPOINTCTL_README_TRANSCRIPT"):
            Path(os.environ["ENDPOINTCTL_README_TRANSCRIPT"]).write_text(transcript.read_text())
