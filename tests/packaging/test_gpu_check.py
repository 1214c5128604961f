"""bench/gpu_check.sh, the check meant for a GPU machine, tested where there is none: it refuses in one line with exit
status 2, and its Python part runs its whole comparison and measurement on the CPU with `--device cpu`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_gpu_the_script_fails_at_once_in_one_line(tmp_path):
    # A stand-in nvidia-smi that finds no driver, first on PATH: the same answer whatever this machine has.
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'"
                    "\nexit 9\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    result = subprocess.run([str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no NVIDIA GPU found" in result.stderr


def test_the_python_part_refuses_cuda_when_torch_sees_no_device():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cuda"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no CUDA device visible to PyTorch" in result.stderr


def test_on_cpu_the_check_compares_greedy_output_with_transformers_and_measures(tiny_model_dir):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu",
                             "--model", str(tiny_model_dir), "--prompts", "3", "--new-tokens", "12",
                             "--requests", "8", "--clients", "4", "--max-tokens", "16"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert report["greedy_identical"] == "3/3" and report["problems"] == [] and report["ok"] is True
    assert report["throughput"]["output_tokens"] == 8 * 16 and report["throughput"]["tokens_per_s"] > 0
    assert report["memory_used_mib"] > 0 and report["max_batch_total_tokens"] > 0
