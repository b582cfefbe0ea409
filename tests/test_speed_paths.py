"""The hot-path shortcuts of issue 6 give exactly what the long way gave.

The transaction's reused copy restores a refused step bit for bit, the first step's forward
pass is the prequential score, the log's group commit still makes every record durable before
it is acknowledged, and a rollback to a recent version reads no weight file.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from models.spec import NetworkSpec, OptimizerSpec
from service.config import Settings
from service.learning.evaluation import evaluate
from service.learning.head import TrainingHead
from service.learning.trainer import Limits, fit
from service.learning.training_config import TrainingConfig
from service.storage.wal import ModelLog
from tests.factories import checkpoint, labelled, model_body, predicted, rollback, rows

SPEC = NetworkSpec.model_validate(
    {"task": "classification", "inputs": 6, "outputs": 3, "hidden": [16], "normalize": False}
)
ONE_STEP = TrainingConfig(batch_size=64, replay=0, steps_per_batch=1)
LOOSE = Limits(max_weight_abs=1e4, max_grad_norm=1e6)


def _head() -> TrainingHead:
    return TrainingHead(SPEC, OptimizerSpec(), seed=3, device=torch.device("cpu"))


def _batch(seed: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _tensors(head: TrainingHead) -> list[torch.Tensor]:
    state = head.state()
    optimizer = [v for entries in state.optimizer["state"].values() for v in entries.values()]
    return [*state.network.values(), *optimizer, state.rng]


def _train(head: TrainingHead, seed: int) -> None:
    """Optimizer steps outside `fit` (which would take a backup of its own)."""
    x, y = _batch(seed)
    head.optimizer.zero_grad(set_to_none=True)
    head.loss(head.network(x), y).backward()
    head.optimizer.step()
    head.step, head.samples_seen = head.step + 1, head.samples_seen + x.shape[0]


def test_backup_restores_the_head_bit_for_bit_after_steps() -> None:
    head = _head()
    _train(head, 0)
    before, counters = _tensors(head), (head.step, head.samples_seen)
    head.backup.save(head)
    for seed in (1, 2):
        _train(head, seed)
    head.backup.restore(head)
    after = _tensors(head)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert (head.step, head.samples_seen) == counters


def test_backup_taken_before_the_first_step_leaves_no_optimizer_state() -> None:
    head = _head()
    head.backup.save(head)
    _train(head, 0)
    head.backup.restore(head)
    assert head.optimizer.state_dict()["state"] == {}
    assert head.step == 0


def test_first_step_outputs_are_the_heads_score_before_training() -> None:
    head = _head()
    for seed in range(3):
        x, y = _batch(seed)
        expected = evaluate(head.network, SPEC, x, y)
        result = fit(
            head, x, y, training=ONE_STEP, optimizer=OptimizerSpec(), limits=LOOSE,
            keep_outputs=x.shape[0],
        )  # fmt: skip
        assert result.first_outputs is not None
        assert evaluate(torch.nn.Identity(), SPEC, result.first_outputs, y) == expected


def test_group_commit_syncs_every_record_written_before_it(tmp_path: Path) -> None:
    log = ModelLog(tmp_path / "wal")
    arrays = {"inputs": np.ones((2, 3), dtype=np.float32)}
    written = [log.write("fit", {"i": i}, arrays) for i in range(3)]
    assert log.synced_seq == 0
    log.sync(written[0].seq)  # one fsync covers the records written before it started
    assert log.synced_seq == written[-1].seq
    log.close()
    reopened = ModelLog(tmp_path / "wal")
    assert [r.args["i"] for r in reopened.read(after=0)] == [0, 1, 2]
    reopened.close()


def test_concurrent_writers_are_all_durable_when_their_sync_returns(tmp_path: Path) -> None:
    log = ModelLog(tmp_path / "wal")
    arrays = {"inputs": np.zeros((4, 3), dtype=np.float32)}
    acknowledged: list[int] = []

    def writer() -> None:
        for _ in range(10):
            record = log.write("fit", {}, arrays)
            log.sync(record.seq)
            assert log.synced_seq >= record.seq
            acknowledged.append(record.seq)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sorted(acknowledged) == list(range(1, 41))
    reopened = ModelLog(tmp_path / "wal")
    assert [r.seq for r in reopened.read(after=0)] == list(range(1, 41))
    reopened.close()


def test_rollback_to_a_recent_version_reads_no_weight_file(
    client: TestClient, settings: Settings
) -> None:
    client.post("/v1/models", json=model_body("m", seed=5))
    probe = rows(8, seed=9)
    client.post("/v1/models/m/partial-fit", json=labelled(48, seed=1))
    assert checkpoint(client, "m") == 2
    served_by_two = predicted(client, "m", probe, version=2)
    client.post("/v1/models/m/partial-fit", json=labelled(48, seed=2))
    assert checkpoint(client, "m") == 3
    weights = [p for p in settings.data_dir.rglob("*.safetensors") if "snapshots" not in p.parts]
    assert weights  # the versions' files, which a rollback must not need
    for path in weights:
        path.write_bytes(b"not a checkpoint")
    rollback(client, "m", 2)
    assert predicted(client, "m", probe) == served_by_two
