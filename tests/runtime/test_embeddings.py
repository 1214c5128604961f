"""An embedding model (all-MiniLM-L6-v2, BertModel) served on /v1/embeddings; checked against
sentence-transformers, plus a clean SIGTERM exit."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import pytest

from tests.fixtures.models import start_runtime_server


@pytest.mark.slow
def test_embeddings_server(embedding_model_dir):
    import openai
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew by 4%."]
    with start_runtime_server(embedding_model_dir) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        resp = client.embeddings.create(model="minilm", input=texts)
        vectors = [d.embedding for d in resp.data]
        assert [d.index for d in resp.data] == [0, 1, 2]
        assert all(len(v) == 384 for v in vectors)
        assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
        assert resp.usage.prompt_tokens > 10
        reference = SentenceTransformer(str(embedding_model_dir), device="cpu").encode(texts, normalize_embeddings=True)
        for got, want in zip(vectors, reference, strict=True):
            assert sum(a * b for a, b in zip(got, want.tolist(), strict=True)) > 0.9999
        single = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
        raw = base64.b64decode(single.data[0].embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vectors[0], abs=1e-5)
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            err = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert err.status_code == 404 and "text-generation" in err.json()["error"]["message"]
            assert http.post("/v1/embeddings", json={"input": texts, "dimensions": 3}).status_code == 422
            assert http.get("/info").json()["model_pipeline_tag"] == "feature-extraction"
        assert server.stop() == 0
