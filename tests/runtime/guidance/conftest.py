"""Fixtures for the guidance library tests: the tiny model's tokenizer and weights, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.guidance.decoding import TinyLM


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path, tiny_tokenizer) -> TinyLM:
    return TinyLM(tiny_model_dir, tiny_tokenizer)


@pytest.fixture()
def compiler(tiny_lm: TinyLM):
    from runtime.guidance import GrammarCompiler

    return GrammarCompiler(tiny_lm.tokenizer, vocab_size=tiny_lm.vocab_size)
