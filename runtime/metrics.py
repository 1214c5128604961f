"""Prometheus metrics under both families clients dashboards expect: TGI's ``tgi_*`` and vLLM's ``vllm:*``.

Request-level series are observed by the HTTP layer (:class:`RuntimeMetrics`); batch/queue gauges are read
from the engine's plain counters at scrape time by a custom collector, so the decode loop never touches
prometheus objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.engine.params import FinishReason

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class _EngineCollector(Collector):
    def __init__(self, read: Callable[[], dict], model_name: str) -> None:
        self._read = read
        self._model = model_name

    def collect(self) -> Iterable:
        s = self._read()
        for name, value, doc in (
            ("tgi_queue_size", s["queue_size"], "Requests waiting for a batch slot"),
            ("tgi_batch_current_size", s["batch_size"], "Sequences in the running batch"),
            ("tgi_batch_current_max_tokens", s["batch_tokens"], "Tokens held by the running batch"),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield self._per_model(GaugeMetricFamily, "vllm:num_requests_running", "Sequences in the running batch",
                              s["batch_size"])
        yield self._per_model(GaugeMetricFamily, "vllm:num_requests_waiting", "Sequences waiting", s["queue_size"])
        yield GaugeMetricFamily("endpointctl_requests_in_flight", "HTTP generation requests in flight", value=s["in_flight"])
        yield GaugeMetricFamily("endpointctl_batch_max_size_reached", "Largest decode batch so far", value=s["max_batch"])
        yield CounterMetricFamily("endpointctl_decode_steps", "Decode forward passes", value=s["steps"])
        yield CounterMetricFamily(
            "endpointctl_decode_batch_size", "Sum of decode batch sizes (divide by steps for the mean)", value=s["batch_sum"]
        )
        yield self._per_model(CounterMetricFamily, "vllm:spec_decode_num_draft_tokens", "N-gram draft tokens proposed",
                              s["spec_draft"])
        yield self._per_model(CounterMetricFamily, "vllm:spec_decode_num_accepted_tokens",
                              "Draft tokens the model agreed with", s["spec_accepted"])
        yield self._per_model(CounterMetricFamily, "vllm:prefix_cache_queries",
                              "Prompt tokens looked up in the prefix cache", s.get("prefix_queries", 0))
        yield self._per_model(CounterMetricFamily, "vllm:prefix_cache_hits",
                              "Prompt tokens found in the prefix cache (reused, not prefilled)", s.get("prefix_hits", 0))
        yield self._per_model(GaugeMetricFamily, "vllm:kv_cache_usage_perc",
                              "Fraction of the KV cache pool held by running sequences (0..1)", s.get("kv_usage", 0.0))
        yield self._per_model(CounterMetricFamily, "vllm:num_preemptions",
                              "Sequences preempted back to the queue because the KV cache was full",
                              s.get("preemptions", 0))

    def _per_model(self, family, name: str, doc: str, value: float):
        """A vLLM-style family: one sample labelled with the served model's name."""
        metric = family(name, doc, labels=["model_name"])
        metric.add_metric([self._model], value)
        return metric


class RuntimeMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        r = self.registry
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Successful requests", registry=r)
        self.request_failure = Counter("tgi_request_failure", "Failed requests", ["err"], registry=r)
        self.request_duration = Histogram("tgi_request_duration", "End-to-end seconds", buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram("tgi_request_queue_duration", "Seconds queued", buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "tgi_request_inference_duration", "Seconds from first to last token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.mean_time_per_token = Histogram(
            "tgi_request_mean_time_per_token_duration", "Mean seconds per generated token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.input_length = Histogram("tgi_request_input_length", "Prompt tokens", buckets=TOKEN_BUCKETS, registry=r)
        self.generated_tokens = Histogram("tgi_request_generated_tokens", "Generated tokens", buckets=TOKEN_BUCKETS, registry=r)
        self.max_new_tokens = Histogram("tgi_request_max_new_tokens", "Requested max new tokens", buckets=TOKEN_BUCKETS, registry=r)
        labels = ["model_name"]
        self.v_ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.v_itl = Histogram("vllm:inter_token_latency_seconds", "Inter-token latency", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.v_e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end latency", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.v_queue = Histogram("vllm:request_queue_time_seconds", "Queue time", labels, buckets=LATENCY_BUCKETS, registry=r)
        self.v_prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed", labels, registry=r)
        self.v_generation_tokens = Counter("vllm:generation_tokens", "Generated tokens", labels, registry=r)
        self.v_success = Counter("vllm:request_success", "Finished requests", ["model_name", "finished_reason"], registry=r)
        self.v_req_prompt = Histogram("vllm:request_prompt_tokens", "Prompt tokens per request", labels, buckets=TOKEN_BUCKETS, registry=r)
        self.v_req_gen = Histogram("vllm:request_generation_tokens", "Generated tokens per request", labels, buckets=TOKEN_BUCKETS, registry=r)
        # Observed once per generated token, on the event loop: resolve the labelled child once (``labels()``
        # takes a lock and builds a key every call).
        self._itl = self.v_itl.labels(model_name)

    def attach_engine(self, read: Callable[[], dict]) -> None:
        self.registry.register(_EngineCollector(read, self.model_name))

    def observe_token_gap(self, gap: float) -> None:
        self._itl.observe(gap)

    def observe_finished(
        self,
        *,
        arrival: float,
        first_token_at: float | None,
        end: float,
        prompt_tokens: int,
        generated: int,
        max_new_tokens: int,
        finish: FinishReason | None,
    ) -> None:
        m = self.model_name
        self.request_success.inc()
        self.request_duration.observe(end - arrival)
        self.input_length.observe(prompt_tokens)
        self.generated_tokens.observe(generated)
        self.max_new_tokens.observe(max_new_tokens)
        self.v_e2e.labels(m).observe(end - arrival)
        self.v_prompt_tokens.labels(m).inc(prompt_tokens)
        self.v_generation_tokens.labels(m).inc(generated)
        self.v_req_prompt.labels(m).observe(prompt_tokens)
        self.v_req_gen.labels(m).observe(generated)
        if first_token_at is not None:
            self.queue_duration.observe(first_token_at - arrival)
            self.v_queue.labels(m).observe(first_token_at - arrival)
            self.v_ttft.labels(m).observe(first_token_at - arrival)
            self.inference_duration.observe(end - first_token_at)
            if generated:
                self.mean_time_per_token.observe((end - first_token_at) / generated)
        reason = "length" if finish is FinishReason.LENGTH else "stop"
        self.v_success.labels(m, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
