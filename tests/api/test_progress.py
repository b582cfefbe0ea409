"""Live progress over HTTP: Server-Sent Events, learning curves, Prometheus metrics."""

from __future__ import annotations

import time

import httpx
import numpy as np
import orjson
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import model_body
from tests.live_server import serving


def stream_some(client: TestClient, *, model: str = "m", batches: int = 6) -> None:
    rng = np.random.default_rng(0)
    for _ in range(batches):
        x = rng.normal(size=(64, 4))
        y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
        body = {"inputs": x.tolist(), "targets": y.tolist()}
        assert client.post(f"/v1/models/{model}/partial-fit", json=body).status_code == 200


def sse_events(text: str) -> list[dict[str, object]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"]} | orjson.loads(fields["data"])
            )
    return events


def curious_model(client: TestClient) -> None:
    client.post("/v1/models", json=model_body(training={"eval_every": 2, "holdout": 0.2}))


def test_event_stream_sends_every_event_in_order_with_ids(client: TestClient) -> None:
    curious_model(client)
    stream_some(client)
    stored = client.get("/v1/models/m/events").json()["events"]
    with client.stream("GET", f"/v1/models/m/events/stream?max_events={len(stored)}") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert [e["id"] for e in events] == [e["id"] for e in stored]
    assert [e["event"] for e in events] == [e["kind"] for e in stored]
    assert {"created", "round", "checkpoint"} <= {e["event"] for e in events}


def test_event_stream_resumes_after_last_event_id(client: TestClient) -> None:
    curious_model(client)
    stream_some(client)
    stored = client.get("/v1/models/m/events").json()["events"]
    resume_at = stored[3]["id"]
    with client.stream(
        "GET", "/v1/models/m/events/stream?max_events=2", headers={"Last-Event-ID": str(resume_at)}
    ) as response:
        events = sse_events(response.read().decode())
    assert [e["id"] for e in events] == [stored[4]["id"], stored[5]["id"]]


def test_event_stream_of_an_unknown_model_is_a_404(client: TestClient) -> None:
    assert client.get("/v1/models/nope/events/stream").status_code == 404


def test_history_has_a_point_per_round_and_markers(client: TestClient) -> None:
    curious_model(client)
    stream_some(client, batches=8)
    history = client.get("/v1/models/m/history").json()
    rounds = [e for e in client.get("/v1/models/m/events").json()["events"] if e["kind"] == "round"]
    assert history["rounds"] == len(rounds) == len(history["points"])
    steps = [p["step"] for p in history["points"]]
    assert steps == sorted(steps)
    assert {"train_loss", "val_loss", "val_accuracy", "samples_seen"} <= set(history["points"][0])
    checkpoints = [m for m in history["markers"] if m["kind"] == "checkpoint"]
    assert checkpoints
    assert all(m["step"] in steps for m in checkpoints)


def test_history_downsamples_keeping_first_and_last(client: TestClient) -> None:
    curious_model(client)
    stream_some(client, batches=8)
    full = client.get("/v1/models/m/history").json()["points"]
    few = client.get("/v1/models/m/history?points=3").json()["points"]
    assert len(full) > 3
    middle = round((len(full) - 1) / 2)
    assert few == [full[0], full[middle], full[-1]]


def test_metrics_report_requests_training_and_served_version(client: TestClient) -> None:
    curious_model(client)
    stream_some(client, batches=3)
    client.post("/v1/models/m/predict", json={"inputs": [[0, 0, 0, 0]] * 5})
    text = client.get("/metrics").text
    model = client.get("/v1/models/m").json()
    assert f'gradual_training_steps_total{{model="m"}} {float(model["step"])}' in text
    assert f'gradual_training_samples_total{{model="m"}} {float(model["samples_seen"])}' in text
    assert f'gradual_served_version{{model="m"}} {float(model["served_version"])}' in text
    route = 'route="/v1/models/{name}/partial-fit"'
    assert f'gradual_http_requests_total{{method="POST",{route},status="200"}} 3.0' in text
    assert 'gradual_predict_batch_rows_bucket{le="8.0"} 1.0' in text
    assert 'gradual_validation_loss{model="m"}' in text


def test_an_open_event_stream_gets_each_event_as_it_is_written(settings: Settings) -> None:
    """A reader waiting on an idle model is woken by the next event, well before the 15 s
    keep-alive: writers wake the loop only while someone listens, and this one listens."""
    with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = model_body(training={"eval_every": 1, "holdout": 0.2})
        assert http.post("/v1/models", json=body).status_code == 201
        rng = np.random.default_rng(3)
        x = rng.normal(size=(64, 4))
        batch = {"inputs": x.tolist(), "targets": (x[:, 0] > 0).astype(int).tolist()}
        since = http.get("/v1/models/m/events").json()["events"][-1]["id"]
        waits = []
        with http.stream("GET", f"/v1/models/m/events/stream?since={since}") as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            for _ in range(3):
                time.sleep(0.3)  # the reader has read everything and waits
                started = time.monotonic()
                assert http.post("/v1/models/m/partial-fit", json=batch).status_code == 200
                assert "event: round" in (line for line in lines)  # reads up to the round
                waits.append(time.monotonic() - started)
        assert max(waits) < 5.0, waits
