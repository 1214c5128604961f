"""`endpointctl demo` (what scripts/demo.sh runs after set-up) from start to finish: on the real model, the question
and a real answer are printed, and it ends cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realmodel]

ENDPOINTCTL = str(Path(sys.executable).with_name("endpointctl"))


def test_the_demo_asks_a_question_and_prints_the_real_answer(tmp_path: Path, real_model_dir: Path) -> None:
    from runtime.realmodels import cache_root

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENDPOINTCTL_") and k not in ("DATABASE_URL", "REDIS_URL")}
    # The model the session already built (same cache), a home of its own, a terminal wide enough for one line each.
    env.update(ENDPOINTCTL_MODEL_CACHE=str(cache_root()), HOME=str(tmp_path), COLUMNS="200", PYTHONUNBUFFERED="1")
    proc = subprocess.run([ENDPOINTCTL, "demo"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"is already built in {real_model_dir}" in out, out
    assert "user: What is the capital of France? Answer in one sentence." in out, out
    answer = next(line for line in out.splitlines() if line.strip().startswith("assistant:"))
    assert "Paris" in answer, out
    assert "user: Hello! Who are you? Answer in one sentence." in out, out
    assert "no replica process left" in out and out.rstrip().endswith("demo complete"), out
