"""Two real replicas sharing PostgreSQL, Redis and a weight folder; one of them SIGKILLed.

Batches go to both replicas; the owner of the model trains each exactly once; a version
promoted on one is served by the other within a second; after the owner dies the other takes
the model over and finishes the stream with every acknowledged batch applied exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.factories import labelled, model_body
from tests.streaming.replicas import Replica, cluster_database, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

ROWS, LEASE_S = 8, 1.0
BEFORE_KILL, AFTER_KILL = 30, 20


@dataclass
class Story:
    first: list[dict[str, Any]] = field(default_factory=list)  # answers before the kill
    after: list[dict[str, Any]] = field(default_factory=list)  # answers after it
    resent: list[dict[str, Any]] = field(default_factory=list)
    owner_state: dict[str, Any] = field(default_factory=dict)
    swap_s: float = 0.0
    promoted: int = 0
    predictions: list[Any] = field(default_factory=list)
    takeover_s: float = 0.0
    final: dict[str, Any] = field(default_factory=dict)
    survivor_owned: list[str] = field(default_factory=list)
    versions: list[tuple[int, str, str, str]] = field(default_factory=list)
    data: Path = Path()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with cluster_database("replicas") as database:
        yield database | {
            "GRADUAL_DATA_DIR": str(tmp_path_factory.mktemp("shared") / "data"),
            "GRADUAL_LEASE_TTL_S": str(LEASE_S), "GRADUAL_SYNC_EVERY_S": "0.3",
        }  # fmt: skip


@pytest.fixture(scope="module")
def story(shared: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    logs = tmp_path_factory.mktemp("replica-logs")
    a = Replica("a", shared, logs / "a.log").start()
    b = Replica("b", shared, logs / "b.log").start()
    try:
        yield play(a, b, Path(shared["GRADUAL_DATA_DIR"]))
    finally:
        a.stop()
        b.stop()


def play(a: Replica, b: Replica, data: Path) -> Story:
    story = Story(data=data)
    assert a.post("/v1/models", model_body("m")).status_code == 201
    wait_until(lambda: "m" in a.owned() + b.owned())
    wait_until(lambda: b.http.get("/v1/models/m").status_code == 200, timeout=5)
    owner, other = (a, b) if "m" in a.owned() else (b, a)
    batches = [
        labelled(ROWS, seed=i) | {"batch_id": f"b{i}"} for i in range(BEFORE_KILL + AFTER_KILL)
    ]
    for i, batch in enumerate(batches[:BEFORE_KILL]):
        story.first.append(answer((a, b)[i % 2].post("/v1/models/m/partial-fit", batch)))
    story.owner_state = owner.get("/v1/models/m")
    promote_on_owner_and_time_the_other(owner, other, story)
    owner.kill()
    story.takeover_s = wait_until(lambda: "m" in other.owned(), timeout=30)
    print(f"taken over {story.takeover_s:.2f} s after the SIGKILL")
    for batch in batches[BEFORE_KILL:]:
        story.after.append(answer(other.post("/v1/models/m/partial-fit", batch)))
    story.resent = [answer(other.post("/v1/models/m/partial-fit", x)) for x in batches]
    story.final = other.get("/v1/models/m")
    story.survivor_owned = other.owned()
    story.versions = versions_in_postgres(other)
    return story


def answer(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def promote_on_owner_and_time_the_other(owner: Replica, other: Replica, story: Story) -> None:
    made = owner.post("/v1/models/m/versions")
    assert made.status_code == 201, made.text
    story.promoted = made.json()["version"]
    promoted = owner.post("/v1/models/m/promote", {"version": story.promoted})
    assert promoted.status_code == 200, promoted.text
    story.swap_s = wait_until(
        lambda: other.get("/v1/models/m")["served_version"] == story.promoted, timeout=10
    )
    probe = {"inputs": labelled(4, seed=99)["inputs"]}
    story.predictions = [r.post("/v1/models/m/predict", probe).json() for r in (owner, other)]


def versions_in_postgres(replica: Replica) -> list[tuple[int, str, str, str]]:
    rows = replica.get("/v1/models/m/versions")["versions"]
    return [(r["version"], r["status"], r["weights_sha256"], str(r["weights_bytes"])) for r in rows]


def test_every_batch_sent_to_either_replica_is_trained_once(story: Story) -> None:
    assert [a["duplicate"] for a in story.first] == [False] * BEFORE_KILL
    assert story.owner_state["samples_seen"] == BEFORE_KILL * ROWS
    assert sorted(a["samples_seen"] for a in story.first) == [
        ROWS * (i + 1) for i in range(BEFORE_KILL)
    ]


def test_a_version_promoted_on_one_replica_is_served_by_the_other_within_a_second(
    story: Story,
) -> None:
    assert story.swap_s < 1.0
    assert story.predictions[0] == story.predictions[1]
    assert story.predictions[0]["version"] == story.promoted


def test_the_survivor_takes_the_model_over_after_the_owner_is_killed(story: Story) -> None:
    assert story.survivor_owned == ["m"]
    assert story.takeover_s < LEASE_S + 5


def test_every_acknowledged_batch_is_applied_exactly_once_across_the_kill(story: Story) -> None:
    assert [a["duplicate"] for a in story.after] == [False] * AFTER_KILL
    assert story.final["samples_seen"] == (BEFORE_KILL + AFTER_KILL) * ROWS
    assert story.final["step"] == BEFORE_KILL + AFTER_KILL


def test_resending_every_batch_after_the_takeover_trains_nothing(story: Story) -> None:
    assert all(a["duplicate"] for a in story.resent)
    assert story.final["samples_seen"] == (BEFORE_KILL + AFTER_KILL) * ROWS


def test_every_version_row_points_at_a_file_in_the_shared_weight_folder(story: Story) -> None:
    import hashlib

    assert len(story.versions) >= 2
    weights = story.data / "weights"
    files = {p.read_bytes() for p in weights.glob("m*/*.safetensors")}
    sums = {hashlib.sha256(blob).hexdigest() for blob in files}
    for number, status, sha, _size in story.versions:
        if status == "ready":
            assert sha in sums, f"version {number}'s file is missing or corrupt"
