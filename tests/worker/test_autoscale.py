"""The autoscaler's arithmetic and its stabilisation window (pure functions; the live loop is in tests/e2e)."""

from worker.metrics_sampler import parse_exposition
from worker.tasks import recommend, stabilized


def test_recommendation_is_pending_over_threshold_clamped():
    assert recommend(0, 1.5, 1, 4) == 1
    assert recommend(1.5, 1.5, 1, 4) == 1
    assert recommend(1.6, 1.5, 1, 4) == 2
    assert recommend(100, 1.5, 1, 4) == 4
    assert recommend(0, 1.0, 2, 4) == 2


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window():
    want, history = stabilized((), 0.0, 3, 1, window=60)
    assert want == 3
    # Load drops: the recent recommendation of 3 holds the replicas until it leaves the window.
    want, history = stabilized(history, 10.0, 1, 3, window=60)
    assert want == 3
    want, history = stabilized(history, 30.0, 2, 3, window=60)
    assert want == 3
    want, history = stabilized(history, 65.0, 1, 3, window=60)
    assert want == 2  # the 3 from t=0 left the window; the 2 from t=30 has not
    want, history = stabilized(history, 100.0, 1, 2, window=60)
    assert want == 1
    assert all(100.0 - h.at <= 60 for h in history)


def test_pending_requests_come_from_the_first_engine_whose_names_a_replica_exports():
    text = "\n".join([
        "# TYPE tgi_queue_size gauge", "tgi_queue_size 3.0", "# TYPE tgi_batch_current_size gauge",
        "tgi_batch_current_size 5",
    ])
    assert parse_exposition(text).pending == 8
    vllm = "\n".join(['vllm:num_requests_waiting{model_name="m"} 1', 'vllm:num_requests_running{model_name="m"} 2'])
    assert parse_exposition(vllm + "\n" + text).pending == 3  # the runtime exports vLLM's names: they come first
