"""The autoscaler and the charts read each engine's own metric names, from one table (`worker.engines.ENGINE_METRICS`),
checked against each engine's exposition format (tests/data/engine_metrics/, sources in its README)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker import metrics_sampler, tasks
from worker.engines import ENGINE_METRICS
from worker.metrics_sampler import parse_exposition

DATA = Path(__file__).resolve().parents[1] / "data" / "engine_metrics"
SAMPLES = {"vLLM": "vllm.txt", "TGI": "tgi.txt", "SGLang": "sglang.txt", "llama.cpp": "llamacpp.txt",
           "TEI": "tei.txt"}
# (queued + running, cumulative requests, cumulative generated tokens) each sample holds. vLLM's and llama.cpp's are
# captured here from running servers; SGLang's, TEI's and TGI's are captures published by others (README).
EXPECTED = {"vLLM": (3 + 2, 3.0, 43.0), "TGI": (0 + 0, 109.0, 3423.0),
            "SGLang": (2826 + 162, 11228.0, 7557572.0), "llama.cpp": (2 + 2, None, 32.0),
            "TEI": (0.0, 2.0, None)}  # TEI: te_queue_size only; te_request_success{method="batch"}; no tokens


def _families(name: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families((DATA / name).read_text())}


@pytest.mark.parametrize("engine", ENGINE_METRICS, ids=lambda m: m.engine)
def test_every_name_in_the_table_is_a_family_of_its_engine(engine) -> None:
    families = _families(SAMPLES[engine.engine])
    for gauge in engine.pending:
        assert families.get(gauge) == "gauge", gauge
    for family, _suffix in filter(None, (engine.requests, engine.tokens)):
        assert family in families, family
    for histogram in filter(None, (engine.ttft, engine.latency)):
        assert families.get(histogram) == "histogram", histogram


@pytest.mark.parametrize("engine", list(SAMPLES))
def test_each_engine_sample_gives_pending_requests_and_counters(engine: str) -> None:
    reading = parse_exposition((DATA / SAMPLES[engine]).read_text())
    pending, requests, tokens = EXPECTED[engine]
    assert (reading.pending, reading.requests, reading.tokens) == (pending, requests, tokens)


def test_every_engine_in_the_table_has_a_sample() -> None:
    assert {m.engine for m in ENGINE_METRICS} == set(SAMPLES)


def test_charts_read_the_histograms_of_the_captured_sglang_sample() -> None:
    reading = parse_exposition((DATA / "sglang.txt").read_text())
    assert reading.ttft["+Inf"] == 11008.0 and reading.ttft["1.0"] == 27.0
    assert reading.latency["+Inf"] == 11228.0 and reading.latency["60.0"] == 1513.0
    # Over half the requests took longer than the last finite bound: the median is that bound, as in Prometheus.
    assert metrics_sampler.histogram_quantile(0.5, reading.latency) == 60.0
    assert metrics_sampler.histogram_quantile(0.5, reading.ttft) == 30.0


def test_charts_read_the_histograms_of_the_captured_tgi_and_vllm_samples() -> None:
    tgi = parse_exposition((DATA / "tgi.txt").read_text())
    assert tgi.ttft == {} and tgi.latency["+Inf"] == 109.0  # TGI exports no time-to-first-token histogram
    # The 54.5th of 109 latencies lies in (3.79 s, 5.68 s]: 51 below it, 77 up to its top; interpolated within.
    lo, hi = 3.787675244106352, 5.681512866159528
    assert metrics_sampler.histogram_quantile(0.5, tgi.latency) == pytest.approx(lo + (hi - lo) * (54.5 - 51) / 26)
    vllm = parse_exposition((DATA / "vllm.txt").read_text())
    assert vllm.ttft["+Inf"] == 5.0 and vllm.latency["+Inf"] == 3.0


def test_the_sampler_and_the_autoscaler_read_the_same_table() -> None:
    assert metrics_sampler._PENDING == tuple(m.pending for m in ENGINE_METRICS)
    assert not hasattr(tasks, "_METRIC")  # no second list of names in the autoscaler


@pytest.mark.parametrize("engine", list(SAMPLES))
def test_autoscaler_signal_per_engine(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DATA / SAMPLES[engine]).read_text()
    monkeypatch.setattr(tasks.httpx, "get", lambda url, timeout: httpx.Response(200, text=text))
    assert tasks.pending_requests("http://replica:8000") == EXPECTED[engine][0]


def test_autoscaler_signal_is_none_without_known_names_or_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    for body in ("# TYPE other gauge\nother 3\n", "<html>not metrics</html>\n{"):
        monkeypatch.setattr(tasks.httpx, "get", lambda url, timeout, body=body: httpx.Response(200, text=body))
        assert tasks.pending_requests("http://replica") is None
