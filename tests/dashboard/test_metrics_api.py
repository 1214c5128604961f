"""`GET /v2/endpoint/{ns}/{name}/metrics` on SQLite and PostgreSQL: the window's samples as aligned columns, the
endpoint routes' auth and 404 rules, bad input answered with a clear 422, and the cascade on delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from common.db import session_factory
from common.models import Endpoint, EndpointMetricSample
from tests.controlplane.conftest import Api, payload

URL = "/v2/endpoint/alice/ep/metrics"


def _samples(api: Api, name: str, *ages_and_rates: tuple[float, float | None]) -> None:
    with session_factory(api.settings)() as session:
        endpoint = session.scalars(select(Endpoint).where(Endpoint.name == name)).one()
        now = datetime.now(UTC)
        for age, rate in ages_and_rates:
            session.add(EndpointMetricSample(endpoint_id=endpoint.id, at=now - timedelta(seconds=age),
                                             ready_replicas=1, target_replicas=2, requests_per_second=rate,
                                             output_tokens_per_second=None if rate is None else rate * 10,
                                             ttft_p50=0.05, ttft_p95=0.2, latency_p50=0.5, latency_p95=1.5,
                                             pending_requests=3.0, counters={"http://r": {"requests": 1}}))
        session.commit()


@pytest.fixture
def alice(api: Api) -> dict[str, str]:
    headers = api.mint("alice")
    assert api.http.post("/v2/endpoint/alice", json=payload("ep"), headers=headers).status_code == 201
    return headers


def test_series_of_the_window_oldest_first(api: Api, alice: dict[str, str]) -> None:
    _samples(api, "ep", (7200, 9.0), (1800, 2.0), (30, None), (10, 4.0))
    r = api.http.get(URL, headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["window"] == 3600 and body["interval"] == api.settings.metrics_interval
    series = body["series"]
    assert series["requestsPerSecond"] == [2.0, None, 4.0]  # the two-hour-old sample is outside the window
    assert series["outputTokensPerSecond"] == [20.0, None, 40.0]
    assert series["t"] == sorted(series["t"]) and len(series["t"]) == 3
    assert series["ttftP95"] == [0.2] * 3 and series["readyReplicas"] == [1] * 3 and series["targetReplicas"] == [2] * 3
    assert "counters" not in r.text and "http://r" not in r.text  # the worker's bookkeeping stays inside
    short = api.http.get(URL, params={"window": 60}, headers=alice).json()
    assert short["window"] == 60 and short["series"]["requestsPerSecond"] == [None, 4.0]


def test_no_samples_yet_is_empty_columns(api: Api, alice: dict[str, str]) -> None:
    series = api.http.get(URL, headers=alice).json()["series"]
    assert series["t"] == [] and series["latencyP50"] == [] and series["pendingRequests"] == []


@pytest.mark.parametrize("window", ["0", "59", "3601", "-1", "abc", "1e3", "", "99999999999999999999"])
def test_bad_window_is_a_clear_422(api: Api, alice: dict[str, str], window: str) -> None:
    r = api.http.get(URL, params={"window": window}, headers=alice)
    assert r.status_code == 422, r.text
    assert "window" in r.json()["error"]


def test_who_may_read(api: Api, alice: dict[str, str]) -> None:
    _samples(api, "ep", (5, 1.0))
    assert api.http.get(URL).status_code == 401
    bob = api.mint("bob")
    hidden = api.http.get(URL, headers=bob)
    missing = api.http.get("/v2/endpoint/alice/nope/metrics", headers=bob)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"].replace("ep", "nope") == missing.json()["error"]
    assert api.http.get("/v2/endpoint/alice/nope/metrics", headers=alice).status_code == 404
    assert api.http.get(URL, headers=api.admin).status_code == 200
    bad_name = api.http.get("/v2/endpoint/alice/%3Cscript%3E/metrics", headers=alice)
    assert bad_name.status_code in (404, 422) and "<script>" not in "".join(bad_name.headers.values())


def test_samples_go_with_their_endpoint(api: Api, alice: dict[str, str]) -> None:
    _samples(api, "ep", (5, 1.0), (3, 2.0))
    with session_factory(api.settings)() as session:
        endpoint = session.scalars(select(Endpoint).where(Endpoint.name == "ep")).one()
        session.delete(endpoint)  # what the worker does once the replicas are gone
        session.commit()
        assert session.scalar(select(func.count()).select_from(EndpointMetricSample)) == 0
