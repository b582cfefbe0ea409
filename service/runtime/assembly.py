"""Assembles a live model from its row: the committed or newest snapshot, the log after it,
the versions it points at. Start, takeover, follower refreshes and creation all come here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch

from models.spec import NetworkSpec, OptimizerSpec
from service.config import Settings
from service.errors import GradualError, ReplayFailed, VersionUnavailable
from service.learning.checkpoint import Checkpoint
from service.learning.control import BestVersion, Control
from service.learning.head import TrainingHead
from service.learning.learner import OnlineLearner
from service.learning.ledger import BatchLedger
from service.learning.race.candidates import Race
from service.learning.race.snapshot import restore_race
from service.learning.served import ServedModel
from service.learning.snapshot import describe, restore_into, snapshot_pointers
from service.learning.trainer import Limits
from service.learning.training_config import TrainingConfig
from service.runtime.executor import Executor
from service.runtime.live import LiveModel
from service.runtime.notify import Notifier
from service.runtime.pipeline import Pipeline
from service.runtime.recorder import ModelRecorder
from service.runtime.version_cache import VersionCache
from service.runtime.writebehind import HistoryThread, WriteBehind
from service.storage.db.tables import ModelRow
from service.storage.guard import StorageGuard
from service.storage.registry import Registry
from service.storage.wal import ModelLog
from service.storage.weightstore import WeightStorage

log = logging.getLogger("gradual.hub")


class Assembler:
    """Builds learners and live models; owns the executor that replays their logs."""

    def __init__(
        self, settings: Settings, registry: Registry, store: WeightStorage, *,
        device: torch.device, limits: Limits, notifier: Notifier, storage: StorageGuard,
        history: HistoryThread,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.history = history  # runs the models' history writes behind their answers
        self.registry = registry
        self.store = store
        self.device = device
        self.limits = limits
        self.notifier = notifier
        self.versions = VersionCache(capacity=8)
        self.executor = Executor(
            store=store, registry=registry, device=device, snapshot_every=settings.snapshot_every,
            snapshot_interval_s=settings.snapshot_interval_s, read=self.read,
            load=self.load_version, compiled=limits.compile_predict, storage=storage,
        )  # fmt: skip

    def restore(self, row: ModelRow) -> LiveModel:
        seq, snapshot = self._snapshot_of(row)
        info = describe(snapshot)
        race = restore_race(snapshot, self.device) if "race" in snapshot.meta else None
        head = self.new_head(row) if race is None else race.leader.head
        assert head is not None
        best_state = head.state_from(self.read(row, info.pointers.best))
        recorded = self.registry.queries.applied_batch_ids(
            row.id, limit=self.settings.batch_id_memory, through_seq=seq
        )
        live = self.live(
            row, head, self.load_version(row, info.pointers.served),
            BestVersion(info.pointers.best, best_state, info.control.stopper.best),
            info.control, info.training, info.pointers.head, seq,
            recorded_ids=recorded, unrecorded_ids=info.unrecorded_ids, race=race,
        )  # fmt: skip
        restore_into(live.learner, snapshot)
        live.publish()
        live.snapshotted(seq, snapshot_pointers(snapshot))
        live.resumed_from(row.applied_through)
        try:
            self._replay(live)
        except ReplayFailed:
            if live.log is not None:
                live.log.close()
            raise
        return live

    def _snapshot_of(self, row: ModelRow) -> tuple[int, Checkpoint]:
        """The committed snapshot (scale-out), else the newest readable local one."""
        if row.snapshot_path is not None and row.snapshot_sha256 is not None:
            return row.snapshot_seq or 0, self.store.read(row.snapshot_path, row.snapshot_sha256)
        found = self.store.latest_snapshot(row.id)
        if found is None:
            raise VersionUnavailable(f"model {row.name} has no recovery snapshot")
        return found

    def _replay(self, live: LiveModel) -> None:
        """Re-applies every logged record after the snapshot, exactly as it ran the first time."""
        if live.log is None:
            return
        live.recorder.replaying_through(live.log.last_seq)
        replayed = 0
        for record in live.log.read(after=live.snapshot_seq):
            try:
                self.executor.run(live, record)
            except GradualError as exc:  # refused the first time too: the log keeps what was sent
                log.info("replay of %s record %d refused again: %s", live.name, record.seq, exc)
            except Exception as exc:  # a bug: going on would silently diverge from the first run
                log.error("replay of %s record %d failed", live.name, record.seq, exc_info=exc)
                raise ReplayFailed(live.name, f"replay failed at record {record.seq}") from exc
            replayed += 1
        if replayed:
            log.info("model %s: replayed %d logged records", live.name, replayed)

    def load_version(self, row: ModelRow, number: int) -> ServedModel:
        def load() -> ServedModel:
            checkpoint = self.read(row, number)
            # A race's versions name their candidate's spec; a lone model's are the row's.
            spec = NetworkSpec.stored(checkpoint.meta.get("spec", row.spec))
            return ServedModel.from_state(
                spec, number, checkpoint.network, self.device,
                compiled=self.limits.compile_predict,
            )  # fmt: skip

        return self.versions.get_or_load((row.id, number), load)

    def read(self, row: ModelRow, number: int) -> Checkpoint:
        version = self.registry.queries.version(row, number)
        if version.status != "ready":
            raise VersionUnavailable(f"version {number} is {version.status}", field="version")
        return self.store.read(version.weights_path, version.weights_sha256)

    def new_head(self, row: ModelRow) -> TrainingHead:
        spec = NetworkSpec.stored(row.spec)
        optimizer = OptimizerSpec.model_validate(row.optimizer)
        return TrainingHead(spec, optimizer, seed=row.seed, device=self.device)

    def live(
        self, row: ModelRow, head: TrainingHead, served: ServedModel, best: BestVersion,
        control: Control, training: TrainingConfig, head_version: int, seq: int, *,
        recorded_ids: Sequence[str] = (), unrecorded_ids: Sequence[str] = (),
        race: Race | None = None,
    ) -> LiveModel:  # fmt: skip
        """A live model around a learner in this state, as of log record `seq`."""
        ledger = BatchLedger(self.settings.batch_id_memory, recorded_ids, unrecorded_ids)
        recorder = ModelRecorder(
            self.registry, self.store, row.id, ledger, notify=partial(self.notifier.notify, row.id),
            database_wait_s=self.settings.database_wait_s,
            behind=WriteBehind(self.history, row.name),
        )  # fmt: skip
        optimizer = OptimizerSpec.model_validate(row.optimizer)
        learner = OnlineLearner(
            head=head, served=served, best=best, head_version=head_version, training=training,
            optimizer=optimizer if race is None else race.leader.plan.optimizer, seed=row.seed,
            limits=self.limits, control=control, race=race, recorder=recorder,
        )  # fmt: skip
        wal = None
        if self.settings.durability == "wal" and self.settings.redis_url is None:
            wal = ModelLog(self.settings.wal_dir / f"m{row.id}")
        pipeline = Pipeline(self.settings.queue_batches, self.settings.retry_after_s)
        return LiveModel(
            row, learner, recorder, ledger, pipeline, wal,
            seq=max(seq, wal.last_seq if wal else 0), snapshot_seq=seq,
        )  # fmt: skip
