"""The sampler's arithmetic on real expositions: the bundled runtime's own `RuntimeMetrics` output (the `vllm:*`
families), TGI's names, restarts, unreadable replicas and Prometheus' quantile interpolation."""

from __future__ import annotations

import math

import pytest

from runtime.engine.params import FinishReason
from runtime.metrics import RuntimeMetrics
from worker.metrics_sampler import ReplicaReading, histogram_quantile, make_point, parse_exposition


def _runtime_after(requests: list[tuple[float, float, int]], *, queued: int = 0, running: int = 0) -> str:
    """The runtime's /metrics text after `requests` finished: (time to first token, total seconds, tokens)."""
    metrics = RuntimeMetrics("m")
    metrics.attach_engine(lambda: {"queue_size": queued, "batch_size": running, "batch_tokens": 0, "in_flight": 0,
                                   "max_batch": 0, "steps": 0, "batch_sum": 0, "spec_draft": 0, "spec_accepted": 0})
    for ttft, total, tokens in requests:
        metrics.observe_finished(arrival=0.0, first_token_at=ttft, end=total, prompt_tokens=5, generated=tokens,
                                 max_new_tokens=64, finish=FinishReason.LENGTH)
    return metrics.render().decode()


def test_parse_reads_the_bundled_runtimes_families():
    reading = parse_exposition(_runtime_after([(0.05, 0.5, 10), (0.07, 0.9, 20)], queued=2, running=3))
    assert reading.requests == 2
    assert reading.tokens == 30
    assert reading.pending == 5
    assert reading.ttft["0.06"] == 1 and reading.ttft["0.08"] == 2 and reading.ttft["+Inf"] == 2
    assert reading.latency["0.5"] == 1 and reading.latency["1.0"] == 2


def test_parse_reads_tgi_names():
    text = "\n".join([
        "# TYPE tgi_request_duration histogram",
        'tgi_request_duration_bucket{le="0.5"} 3', 'tgi_request_duration_bucket{le="+Inf"} 4',
        "tgi_request_duration_sum 2.0", "tgi_request_duration_count 4",
        "# TYPE tgi_request_generated_tokens histogram",
        'tgi_request_generated_tokens_bucket{le="+Inf"} 4', "tgi_request_generated_tokens_sum 80",
        "tgi_request_generated_tokens_count 4",
        "# TYPE tgi_queue_size gauge", "tgi_queue_size 1", "# TYPE tgi_batch_current_size gauge",
        "tgi_batch_current_size 2", ""])
    reading = parse_exposition(text)
    assert (reading.requests, reading.tokens, reading.pending) == (4, 80, 3)
    assert reading.latency == {"0.5": 3, "+Inf": 4} and reading.ttft == {}


def test_parse_of_an_image_without_known_families_reads_nothing():
    reading = parse_exposition("# TYPE my_counter counter\nmy_counter_total 7\n")
    assert reading == ReplicaReading()


def test_parse_skips_values_that_are_not_numbers():
    text = ("# TYPE tgi_queue_size gauge\ntgi_queue_size NaN\n# TYPE tgi_batch_current_size gauge\n"
            "tgi_batch_current_size 2\n# TYPE tgi_request_duration histogram\n"
            'tgi_request_duration_bucket{le="1.0"} 3\ntgi_request_duration_bucket{le="+Inf"} NaN\n'
            "tgi_request_duration_count NaN\n")
    reading = parse_exposition(text)
    assert reading.pending == 2 and reading.requests is None and reading.latency == {"1.0": 3}


def test_quantile_interpolates_like_prometheus():
    buckets = {"0.1": 50, "0.2": 100, "+Inf": 100}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, {"1.0": 0, "+Inf": 4}) == 1.0  # all above the last bound: that bound
    assert histogram_quantile(0.5, {"+Inf": 0}) is None


def test_point_is_the_difference_since_the_previous_sample():
    before = parse_exposition(_runtime_after([(0.05, 0.5, 10)]))
    after = parse_exposition(_runtime_after([(0.05, 0.5, 10), (0.3, 2.0, 30), (0.3, 2.0, 30)]))
    point = make_point({"http://r1": after}, {"http://r1": before.counters()}, 2.0)
    assert point.requests_per_second == pytest.approx(1.0)  # two new requests in two seconds
    assert point.output_tokens_per_second == pytest.approx(30.0)
    # Only the two new requests count for the percentiles: both had a 0.3 s time to first token.
    assert 0.25 < point.ttft_p50 <= 0.5 and 0.25 < point.ttft_p95 <= 0.5
    assert 1.0 < point.latency_p50 <= 2.5
    assert point.counters == {"http://r1": after.counters()}


def test_a_restarted_replica_counts_everything_it_reports():
    before = parse_exposition(_runtime_after([(0.05, 0.5, 10)] * 5))
    after = parse_exposition(_runtime_after([(0.05, 0.5, 10)]))  # fewer than before: it restarted
    point = make_point({"http://r1": after}, {"http://r1": before.counters()}, 1.0)
    assert point.requests_per_second == 1.0 and point.output_tokens_per_second == 10.0


def test_replicas_add_up_and_an_unreadable_one_keeps_its_counters():
    one = parse_exposition(_runtime_after([(0.05, 0.5, 10)], queued=1))
    two = parse_exposition(_runtime_after([(0.05, 0.5, 10)] * 3, running=2))
    point = make_point({"http://a": one, "http://b": two, "http://c": None},
                       {"http://c": {"requests": 9, "tokens": 1, "ttft": {}, "latency": {}}}, 4.0)
    assert point.requests_per_second == 1.0 and point.pending_requests == 3
    assert point.counters["http://c"]["requests"] == 9


def test_first_sample_and_idle_interval():
    reading = parse_exposition(_runtime_after([(0.05, 0.5, 10)]))
    first = make_point({"http://r1": reading}, None, None)
    assert first.requests_per_second is None and first.ttft_p50 is None and first.counters
    idle = make_point({"http://r1": reading}, {"http://r1": reading.counters()}, 1.0)
    assert idle.requests_per_second == 0.0 and idle.output_tokens_per_second == 0.0
    assert idle.ttft_p50 is None and idle.latency_p95 is None  # nothing finished: no percentile to draw
    assert not math.isnan(idle.pending_requests)
