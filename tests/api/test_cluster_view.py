"""GET /v1/cluster: the members, the models each owns, the latest handoffs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.factories import labelled, model_body


def test_one_process_is_the_only_member_and_owns_every_model(client: TestClient) -> None:
    for name in ("a", "b"):
        assert client.post("/v1/models", json=model_body(name)).status_code == 201
    view = client.get("/v1/cluster").json()
    assert view["members"] == [{"replica": view["replica"], "models": ["a", "b"]}]
    assert view["handoffs"] == []


@pytest.fixture
def solo(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings], redis_url: str,
    redis_prefix: str,
) -> TestClient:  # fmt: skip
    """One replica, "solo", coordinated through Redis."""
    settings = make_settings(
        redis_url=redis_url, redis_prefix=redis_prefix, lease_ttl_s=2.0, sync_every_s=0.3,
        replica_id="solo",
    )  # fmt: skip
    return start(settings)


def test_a_redis_replica_lists_itself_with_its_models_and_counts_them_in_metrics(
    solo: TestClient,
) -> None:
    client = solo
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    deadline = time.monotonic() + 10
    while client.get("/v1/cluster").json()["members"] != [{"replica": "solo", "models": ["m"]}]:
        assert time.monotonic() < deadline, client.get("/v1/cluster").json()
        time.sleep(0.05)
    view = client.get("/v1/cluster").json()
    assert view["replica"] == "solo"
    assert [h["model"] for h in view["handoffs"]] == ["m"]  # taken: nobody held it before
    assert view["handoffs"][0]["reason"] == "vacant"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    assert samples[("gradual_models_owned", (("replica", "solo"),))] == 1.0
    assert samples[("gradual_handoffs_total", (("direction", "in"),))] == 1.0


def test_a_handoff_record_filed_with_nothing_waiting_gains_its_first_entry(
    solo: TestClient,
) -> None:
    client = solo
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    deadline = time.monotonic() + 10
    while not client.get("/v1/cluster").json()["handoffs"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (filed,) = client.get("/v1/cluster").json()["handoffs"]
    assert filed["first_entry"] is None  # caught up with no entry waiting
    answer = client.post("/v1/models/m/partial-fit", json=labelled(8, seed=1))
    assert answer.status_code == 200
    deadline = time.monotonic() + 5  # amended just after the outcome is published
    while (amended := client.get("/v1/cluster").json()["handoffs"][0])["first_entry"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert amended["taken"] == filed["taken"]
    assert filed["taken"] <= amended["first_entry"] <= time.time()
