"""Every error case over raw httpx: unknown parameters, bad types and ranges, limits, overload, payload size,
API key, missing chat template — always a clear 4xx in the route family's error shape, never a 500."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.fixtures.models import start_runtime_server

API_KEY = "sekret-key"
LIMITED_ENV = {
    "API_KEY": API_KEY,
    "MAX_INPUT_LENGTH": "64",  # legacy alias of MAX_INPUT_TOKENS
    "MAX_TOTAL_TOKENS": "96",
    "MAX_CONCURRENT_REQUESTS": "2",
    "PAYLOAD_LIMIT": "4096",
    "MAX_STOP_SEQUENCES": "2",
    "MAX_TOP_N_TOKENS": "3",
    "MAX_CLIENT_BATCH_SIZE": "2",
}


@pytest.fixture(scope="module")
def limited(tiny_model_no_template_dir):
    """A server on the model without chat template, with an API key and small limits."""
    with start_runtime_server(tiny_model_no_template_dir, env=LIMITED_ENV) as server:
        yield server


@pytest.fixture
def lclient(limited):
    with httpx.Client(base_url=limited.base_url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


def openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def tgi_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "error_type"}
    return body


def test_port_opened_before_model_was_ready(limited):
    assert limited.health_statuses[0] == 503
    assert limited.health_statuses[-1] == 200


def test_unknown_parameter_is_rejected(http):
    err = openai_error(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                                "guided_json": {"type": "object"}}), 400)
    assert err["param"] == "guided_json" and "guided_json" in err["message"]
    err = openai_error(http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "frobnicate": 1}), 400)
    assert err["param"] == "frobnicate"
    body = tgi_error(http.post("/generate", json={"inputs": "x", "parameters": {"bogus": 1}}), 400)
    assert "bogus" in body["error"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"top_logprobs": 2}, None),  # needs logprobs
        ({"stream_options": {"include_usage": True}}, None),  # needs stream
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_values_name_the_parameter(http, payload, param):
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, **payload}
    err = openai_error(http.post("/v1/chat/completions", json=body), 400)
    if param is not None:
        assert err["param"] == param
        assert param.split(".")[0] in err["message"]


@pytest.mark.parametrize(
    ("parameters", "name"),
    [({"temperature": 0}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
     ({"max_new_tokens": 0}, "max_new_tokens"), ({"best_of": 2, "seed": 1, "do_sample": True}, "seed"),
     ({"repetition_penalty": -1}, "repetition_penalty")],
)
def test_tgi_validation_errors(http, parameters, name):
    body = tgi_error(http.post("/generate", json={"inputs": "x", "parameters": parameters}), 422)
    assert body["error_type"] == "validation"
    assert name in body["error"]


def test_invalid_json(http):
    err = openai_error(http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert "JSON" in err["message"]


def test_wrong_route_kind(http):
    err = openai_error(http.post("/v1/embeddings", json={"input": "x"}), 404)
    assert "embedding" in err["message"]


def test_api_key_required_on_generation_routes(limited):
    with httpx.Client(base_url=limited.base_url, timeout=30) as anon:
        for path, body in [("/v1/completions", {"prompt": "x", "max_tokens": 1}), ("/generate", {"inputs": "x"})]:
            assert anon.post(path, json=body).status_code == 401
            assert anon.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        err = openai_error(anon.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}), 401)
        assert "API key" in err["message"]
        # operational routes stay open
        assert anon.get("/health").status_code == 200
        assert anon.get("/info").status_code == 200
        assert anon.get("/metrics").status_code == 200
        assert anon.get("/v1/models").status_code == 200


def test_api_key_accepted(lclient):
    resp = lclient.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "temperature": 0})
    assert resp.status_code == 200, resp.text


def test_limits_are_reported(lclient):
    info = lclient.get("/info").json()
    assert info["max_input_tokens"] == 64
    assert info["max_total_tokens"] == 96


def test_prompt_over_max_input_tokens(lclient):
    prompt = "word " * 200
    err = openai_error(lclient.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2}), 422)
    assert "64" in err["message"] and "Given:" in err["message"]
    n_tokens = int(err["message"].rsplit("Given:", 1)[1].strip())
    assert n_tokens > 64
    body = tgi_error(lclient.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 2}}), 422)
    assert "64" in body["error"] and str(n_tokens) in body["error"]
    # ...unless truncation is asked for
    ok = lclient.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 2, "truncate": 10,
                                                                           "details": True}})
    assert ok.status_code == 200, ok.text


def test_prompt_plus_max_tokens_over_total(lclient):
    prompt = "word " * 20  # ~21 tokens: under MAX_INPUT_TOKENS=64, but not with 90 more
    err = openai_error(lclient.post("/v1/completions", json={"prompt": prompt, "max_tokens": 90}), 422)
    assert "96" in err["message"] and "90" in err["message"] and err["param"] == "max_tokens"
    body = tgi_error(lclient.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 95}}), 422)
    assert "96" in body["error"] and "95" in body["error"]


def test_too_many_stops_and_top_n(lclient):
    err = openai_error(lclient.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "stop": ["a", "b", "c"]}), 422)
    assert err["param"] == "stop" and "2" in err["message"]
    body = tgi_error(lclient.post("/generate", json={"inputs": "x", "parameters": {"top_n_tokens": 4}}), 422)
    assert "3" in body["error"]


def test_too_many_prompts(lclient):
    err = openai_error(lclient.post("/v1/completions", json={"prompt": ["a", "b", "c"], "max_tokens": 1}), 422)
    assert "batch size" in err["message"]


def test_payload_limit(lclient):
    resp = lclient.post("/v1/completions", json={"prompt": "x" * 5000, "max_tokens": 1})
    err = openai_error(resp, 413)
    assert "4096" in err["message"]
    assert tgi_error(lclient.post("/generate", json={"inputs": "x" * 5000}), 413)["error_type"] == "validation"


def test_missing_chat_template(lclient):
    err = openai_error(lclient.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}), 422)
    assert "template" in err["message"].lower()


def test_overload_429_with_retry_after(limited, lclient):
    """MAX_CONCURRENT_REQUESTS=2: two long streams hold both permits, the third request is refused at once."""
    started = threading.Barrier(3)
    stop = threading.Event()

    def hold():
        with httpx.Client(base_url=limited.base_url, timeout=60, headers=lclient.headers) as c:
            with c.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 90, "stream": True,
                                                            "ignore_eos": True}) as resp:
                lines = resp.iter_lines()
                next(lines)
                started.wait()
                stop.wait(60)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        started.wait(timeout=60)
        resp = lclient.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        err = openai_error(resp, 429)
        assert resp.headers["retry-after"] == "1"
        assert "overloaded" in err["message"].lower()
        assert tgi_error(lclient.post("/generate", json={"inputs": "x"}), 429)["error_type"] == "overloaded"
    finally:
        stop.set()
        for t in threads:
            t.join()
    # permits come back once the streams are gone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if lclient.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200:
            break
        time.sleep(0.2)
    else:
        pytest.fail("permits were not released after the streams closed")
