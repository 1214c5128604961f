"""GGUF repositories on a real stack: an endpoint whose repository holds only a `.gguf` file runs and answers; one
whose file is of a quantization this runtime cannot dequantize ends `failed`, its message carrying the runtime's
one-line reason (the local provider puts the replica's last log lines there)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Api, create_body
from tests.fixtures.models import FRANCE_QUESTION, write_gguf

pytestmark = [pytest.mark.slow, pytest.mark.realmodel]


def _create(api: Api, name: str, repository: Path) -> None:
    response = api.http.post("/v2/endpoint/admin", json=create_body(name, str(repository)))
    assert response.status_code == 201, response.text


def test_gguf_repositories_run_or_fail_with_the_reason(make_stack, tmp_path: Path, real_model_gguf_dir: Path) -> None:
    stack = make_stack()
    api = Api(stack.url)
    unsupported = tmp_path / "one-bit"
    unsupported.mkdir()
    write_gguf(unsupported / "tiny-Q1_0.gguf", {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q1_0"})
    _create(api, "gguf-one-bit", unsupported)
    _create(api, "gguf-smollm2", real_model_gguf_dir)

    failed = api.wait_state("gguf-one-bit", "failed", timeout=240)
    message = failed["status"]["message"]
    assert ("model load failed: tiny-Q1_0.gguf holds tensors of a quantization type this runtime cannot dequantize: "
            "Q1_0 (1 tensor, e.g. blk.0.attn_q.weight)") in message, message
    assert "Traceback" not in message, message

    running = api.wait_state("gguf-smollm2", "running", timeout=300)
    # status.message says which engine serves it: the bundled runtime, from the GGUF file.
    assert running["status"]["message"] == "engine: endpointctl runtime (local processes, GGUF)", running["status"]
    client = openai.OpenAI(base_url=running["status"]["url"] + "/v1/", api_key=ADMIN_TOKEN, max_retries=0, timeout=120)
    reply = client.chat.completions.create(model="tgi", temperature=0, max_tokens=32, messages=[
        {"role": "user", "content": FRANCE_QUESTION}])
    assert "Paris" in reply.choices[0].message.content, reply
