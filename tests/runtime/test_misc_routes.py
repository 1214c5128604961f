"""Operational routes: info, health, metrics names, tokenize/detokenize in TGI and vLLM shapes."""

from __future__ import annotations

from runtime.engine import native


def test_info_has_tgi_fields(http):
    info = http.get("/info").json()
    for key in ("model_id", "model_sha", "model_pipeline_tag", "max_concurrent_requests", "max_best_of",
                "max_stop_sequences", "max_input_tokens", "max_total_tokens",
                "max_client_batch_size", "router", "version", "sha", "docker_label"):
        assert key in info
    # TGI's tokenizer worker count: requests are validated on the event loop here, there is no pool to count
    assert "validation_workers" not in info
    assert info["max_total_tokens"] == 2048 and info["max_input_tokens"] == 2047
    assert info["engine"] == "LeanDecoderRunner"
    assert info["kernels"] == f"native-{native.host_isa()}"  # the test machine has a C compiler: the widest build
    assert info["speculate"] == 3  # SPECULATE's default


def _itl_count(text: str) -> float:
    [line] = [x for x in text.splitlines() if x.startswith("vllm:inter_token_latency_seconds_count{")]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_families(http):
    before = _itl_count(http.get("/metrics").text)
    resp = http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 3, "details": True}})
    assert resp.json()["details"]["generated_tokens"] == 3, resp.text
    text = http.get("/metrics").text
    assert _itl_count(text) - before >= 2  # three tokens, two gaps between them (other tests may add more)
    for name in ("tgi_request_count_total", "tgi_queue_size", "tgi_batch_current_size", "tgi_request_duration_bucket",
                 "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                 "vllm:generation_tokens_total"):
        assert name in text, name


def test_tokenize_roundtrip(http):
    tgi = http.post("/tokenize", json={"inputs": "def foo():"}).json()
    assert "".join(t["text"] for t in tgi[1:]) == "def foo():"  # the first is the BOS token
    vllm = http.post("/tokenize", json={"prompt": "def foo():", "return_token_strs": True}).json()
    assert vllm["tokens"] == [t["id"] for t in tgi]
    assert vllm["count"] == len(tgi) and vllm["max_model_len"] == 2048 and len(vllm["token_strs"]) == len(tgi)
    text = http.post("/detokenize", json={"tokens": vllm["tokens"][1:]}).json()["prompt"]
    assert text == "def foo():"
    chat = http.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["count"] > 3
    bad = http.post("/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 422


def test_health_and_ping(http):
    assert http.get("/health").status_code == 200
    assert http.get("/ping").status_code == 200


def test_speculation_counters_move_for_a_repetitive_greedy_stream(http):
    """A lone greedy stream on a repetitive prompt verifies n-gram drafts; /metrics counts them (vLLM's names)."""
    from tests.runtime.conftest import metric_value

    def counters():
        text = http.get("/metrics").text
        return (metric_value(text, "vllm:spec_decode_num_draft_tokens_total"),
                metric_value(text, "vllm:spec_decode_num_accepted_tokens_total"))

    drafted0, accepted0 = counters()
    body = {"model": "tgi", "prompt": "x = 1\ny = 2\n" * 8, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    out = http.post("/v1/completions", json=body)
    assert out.status_code == 200, out.text
    drafted, accepted = counters()
    assert drafted > drafted0
    assert accepted0 <= accepted <= accepted0 + (drafted - drafted0)
