"""Settings (TGI env names, matching flags, derived defaults) and the tiny model builder's determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from runtime.config import parse_settings, resolve_limits


def test_env_names_and_flags(monkeypatch):
    monkeypatch.setenv("MODEL_ID", "/repository")
    monkeypatch.setenv("MAX_INPUT_LENGTH", "100")
    monkeypatch.setenv("MAX_CONCURRENT_REQUESTS", "7")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_x")
    settings = parse_settings(["--port", "9000", "--max-total-tokens", "300", "--api-key", "k"])
    assert settings.model_id == "/repository"
    assert settings.port == 9000 and settings.max_total_tokens == 300
    assert settings.max_input_tokens == 100 and settings.max_concurrent_requests == 7
    assert settings.hf_token == "hf_x" and settings.api_key == "k"
    flagged = parse_settings(["--max-input-tokens", "50"])
    assert flagged.max_input_tokens == 50  # the flag beats MAX_INPUT_LENGTH from the environment


def test_defaults_derive_from_the_model_config(monkeypatch):
    for name in ("MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    limits = resolve_limits(parse_settings([]), max_position_embeddings=4096, on_gpu=False)
    assert (limits.max_total_tokens, limits.max_input_tokens, limits.max_batch_prefill_tokens) == (4096, 4095, 4145)
    with pytest.raises(ValueError, match="MAX_INPUT_TOKENS"):
        resolve_limits(parse_settings(["--max-input-tokens", "10", "--max-total-tokens", "10"]),
                       max_position_embeddings=4096, on_gpu=False)


def test_help_lists_tgi_flags():
    out = subprocess.run([sys.executable, "-m", "runtime", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for flag in ("--model-id", "--max-input-tokens", "--max-input-length", "--max-batch-prefill-tokens",
                 "--payload-limit", "--api-key", "--dtype"):
        assert flag in out.stdout


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_tiny_model_build_is_deterministic(tmp_path, tiny_model_dir):
    """A fresh build (this process) is byte-identical to the cached one (built by another process)."""
    from runtime.tinymodel import build_tiny_model

    fresh = build_tiny_model(tmp_path / "tiny")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert _sha(fresh / name) == _sha(tiny_model_dir / name), name
