"""Runtime test helpers: clients bound to the session's live runtime server (tests/fixtures/models.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.models import RuntimeServer


@pytest.fixture(scope="session")
def base_url(runtime_server: RuntimeServer) -> str:
    return runtime_server.base_url


@pytest.fixture
def http(base_url: str):
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        yield client


@pytest.fixture
def openai_client(base_url: str):
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120.0)
    yield client
    client.close()


@pytest.fixture
def async_openai_client(base_url: str):
    import openai

    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120.0)


def metric_value(text: str, name: str) -> float:
    """Value of the first sample named ``name`` (labels ignored) in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def rounded_reference(model_dir, dtype):
    """HF's model in fp32 over its weights rounded to ``dtype`` (bfloat16, float16): what fp32 arithmetic over 16-bit
    weights computes. Parameters only: ``model.to(dtype).to(torch.float32)`` would round the RoPE frequencies too
    (a buffer), which a model loaded in ``dtype`` keeps in fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype))
    return model
