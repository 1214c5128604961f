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
SAMPLES = {"vLLM": "vllm.txt", "TGI": "tgi.txt", "SGLang": "sglang.txt", "llama.cpp": "llamacpp.txt"}
# (queued + running, cumulative requests, cumulative generated tokens) each sample holds.
EXPECTED = {"vLLM": (3 + 4, 40.0, 5120.0), "TGI": (2 + 6, 25.0, 2210.0), "SGLang": (7 + 5, 50.0, 6400.0),
            "llama.cpp": (1 + 2, None, 1280.0)}


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
