"""The live-model hub: every model's learner (head, served version, best version), resident.

This is the service layer the routes call. A change to a model is appended to its
write-ahead log (fsynced) before it is queued, so an acknowledged batch survives a crash; the
model's single worker applies records in order off the event loop. Predict reads the served
snapshot, which is replaced by assignment and never modified in place.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import torch
from anyio import to_thread
from pydantic import ValidationError
from redis.asyncio import Redis

from service.api.schemas import CreateModel
from service.config import Settings
from service.errors import (
    InvalidInput,
    ModelExists,
    OutcomeLate,
    VersionUnavailable,
)
from service.kinds import RecordKind
from service.learning.compilation import effective_mode
from service.learning.served import Predictions, decode_outputs, to_device
from service.learning.trainer import Limits
from service.learning.training_config import TrainingConfig
from service.runtime.assembly import Assembler
from service.runtime.creation import check_training, create_model
from service.runtime.history import History
from service.runtime.live import FitOutcome, LiveModel, StreamGuard, Trained
from service.runtime.metrics import Metrics
from service.runtime.microbatch import MicroBatcher
from service.runtime.models import LiveModels
from service.runtime.notify import Notifier
from service.runtime.submit import LocalLog, Submitter, consume
from service.runtime.writebehind import HistoryThread
from service.storage.db.tables import VersionRow
from service.storage.guard import StorageGuard, database_reachable, volumes_of
from service.storage.registry import Registry
from service.storage.wal import ModelLog
from service.storage.weightstore import WeightStorage
from service.streaming.cluster import Cluster
from service.streaming.submitter import StreamSubmitter

log = logging.getLogger("gradual.hub")


class ModelHub:
    """Every model this process holds, and the entry points the routes call.

    Writes (partial-fit, validation rows, commands) are logged, then queued to the model's
    single writer; reads (predict, views) use the status the writer last published. With
    Redis, the submitter carries writes through the model's stream to its owner instead."""

    def __init__(
        self, settings: Settings, registry: Registry, store: WeightStorage,
        *, metrics: Metrics | None = None, redis: Redis | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = registry
        self.store = store
        self.device = settings.torch_device()
        autocast = torch.bfloat16 if settings.precision == "bf16" else None
        compile_mode = effective_mode(settings.compile, self.device)
        self.limits = Limits(
            settings.max_weight_abs, settings.max_grad_norm, autocast, compile=compile_mode
        )
        self.notifier = Notifier(asyncio.get_running_loop())
        self.history = History(registry, self.notifier, self.live)
        self.storage = StorageGuard(
            volumes_of(settings), reserve=settings.storage_reserve_bytes,
            retry_after=settings.storage_retry_after_s,
        )  # fmt: skip
        self.history_thread = HistoryThread(failed=self.storage.note)
        self.assembly = Assembler(
            settings, registry, store, device=self.device, limits=self.limits,
            notifier=self.notifier, storage=self.storage, history=self.history_thread,
        )  # fmt: skip
        self.executor = self.assembly.executor
        self.versions = self.assembly.versions
        self.batcher = MicroBatcher(
            max_batch=settings.predict_max_batch, max_wait_s=settings.predict_max_wait_ms / 1000,
            inline_max_s=settings.predict_inline_ms / 1000,
            on_batch=lambda _key, rows, _requests: self.metrics.predict_rows.observe(rows),
        )  # fmt: skip
        self.models = LiveModels(registry, self.assembly)
        # Chosen once, here: where changes go (the local log, or with Redis the model's stream
        # to its owner, one of the replicas the cluster coordinates).
        self.cluster = None if redis is None else Cluster(
            self.models, redis, settings, executor=self.executor, metrics=self.metrics
        )  # fmt: skip
        self.submitter: Submitter = (
            LocalLog(self.executor, self.storage) if self.cluster is None
            else StreamSubmitter(self.cluster)
        )  # fmt: skip

    # -- lookup ---------------------------------------------------------------------------

    def live(self, name: str) -> LiveModel:
        return self.models.live(name)

    def all(self) -> list[LiveModel]:
        return self.models.all()

    def has(self, name: str) -> bool:
        return self.models.has(name)

    # -- start and stop -------------------------------------------------------------------

    async def close(self) -> None:
        """Graceful stop: finish the queued work, snapshot, close the logs."""
        await self.batcher.close()
        for live in self.all():
            await live.pipeline.close()
            if live.seq != live.snapshot_seq:
                await to_thread.run_sync(self.executor.snapshot_or_defer, live, live.seq)
            await to_thread.run_sync(_written_or_logged, live)
            if live.log is not None:
                live.log.close()
        if isinstance(self.submitter, LocalLog):
            self.submitter.close()
        self.history_thread.close()

    # -- lifecycle ------------------------------------------------------------------------

    async def create(self, request: CreateModel) -> LiveModel:
        check_training(request.training, request.spec)
        if self.models.taken(request.name):
            raise ModelExists(request.name)
        self.storage.check()
        self.models.creating.add(request.name)

        def written() -> LiveModel:
            with self.storage.writing():
                return create_model(request, self.assembly)

        try:
            live = await to_thread.run_sync(written)
        finally:
            self.models.creating.discard(request.name)
        self.models.add(live)
        await self.submitter.created(live.name)
        return live

    async def candidates(self, name: str) -> list[dict[str, Any]]:
        """A race's candidates as its writer sees them between two batches ([] without one)."""
        live = self.live(name)
        if live.learner.race is None:
            return []
        return await live.pipeline.run(
            lambda: live.learner.race.view() if live.learner.race else []
        )

    async def delete(self, name: str) -> None:
        live = self.live(name)

        def delete() -> None:
            if live.recorder.behind is not None:
                live.recorder.behind.discard()  # history of a model about to be gone
            self.registry.delete_model(live.id)
            if live.log is not None:
                live.log.close()
            self.store.remove_model(live.id)
            ModelLog.remove(self.settings.wal_dir / f"m{live.id}")

        await live.pipeline.run(delete)
        self.models.remove(name)
        await self.submitter.deleted(name)

    # -- serving --------------------------------------------------------------------------

    async def predict(
        self, name: str, inputs: np.ndarray, version: int | None
    ) -> tuple[int, Predictions]:
        live = self.live(name)
        served = live.status.served  # one read: a concurrent swap cannot split this request
        if version is not None and version != served.version:
            await self.history.written(name)
            served = await to_thread.run_sync(self.assembly.load_version, live.row, version)
        outputs = await self.batcher.submit(live.id, served, to_device(inputs, self.device))
        return served.version, decode_outputs(served.spec, outputs)

    # -- training -------------------------------------------------------------------------

    async def partial_fit(
        self, name: str, inputs: np.ndarray, targets: np.ndarray, *,
        batch_id: str | None = None, wait: bool = True,
    ) -> FitOutcome:  # fmt: skip
        """Logs and queues a batch (429 when the queue is full); unless `wait` is off, awaits it."""
        live = self.live(name)
        resent = batch_id is not None and batch_id in live.inflight
        position = live.pipeline.depth + 1  # its place in the queue when it was accepted
        future = await self.submit_fit(name, inputs, targets, batch_id=batch_id, wait=wait)
        if future is None or (resent and not wait):  # already applied, or durable and queued
            return FitOutcome(None, duplicate=True)
        if not wait:  # (answered once durable: by then it may have trained already)
            return FitOutcome(None, queued=await self.submitter.queued(live, position))
        try:
            return FitOutcome(await future, duplicate=resent)
        except OutcomeLate:  # durable in the stream: it will apply
            return FitOutcome(None, queued=await self.submitter.queued(live, position))

    async def submit_fit(
        self, name: str, inputs: np.ndarray, targets: np.ndarray, *, batch_id: str | None,
        wait: bool = True, guard: StreamGuard | None = None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        """The batch's future once it is durable, or None for a batch id applied already."""
        live = self.live(name)
        self.storage.check()  # a full or read-only disk: refused before anything is logged
        await self._history_writable(live)
        arrays = {"inputs": inputs, "targets": targets}
        future = await self.submitter.fit(live, arrays, batch_id=batch_id, wait=wait, guard=guard)
        if future is not None and not wait:
            future.add_done_callback(consume)
        return future

    async def add_validation(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> int:
        arrays = {"inputs": inputs, "targets": targets}
        size: int = await self._command(name, "validation", arrays=arrays)
        return size

    async def stop(self, name: str) -> None:
        await self._command(name, "stop")

    async def resume(self, name: str) -> None:
        await self._command(name, "resume")

    async def update_training(self, name: str, changes: dict[str, Any]) -> TrainingConfig:
        live = self.live(name)
        try:
            training = TrainingConfig.model_validate(live.status.training.model_dump() | changes)
        except ValidationError as exc:
            first = exc.errors()[0]
            # Named as creation names them: the PATCH body is the model's `training` section.
            location = ".".join(["training", *(str(part) for part in first["loc"])])
            raise InvalidInput(f"{location}: {first['msg']}", field=location) from None
        check_training(training, live.spec)
        await self._command(name, "training", {"training": training.model_dump()})
        return training

    async def checkpoint(self, name: str) -> VersionRow:
        number: int = await self._command(name, "checkpoint")
        return await self.history.version(name, number)

    async def rollback(self, name: str, version: int) -> None:
        """Serves `version` and resets the head to it: weights and optimizer state."""
        await self._version_exists(name, version)
        await self._command(name, "rollback", {"version": version})

    async def promote(self, name: str, version: int) -> None:
        await self._version_exists(name, version)
        await self._command(name, "promote", {"version": version})

    async def _version_exists(self, name: str, version: int) -> None:
        """Checked before logging, so a command that cannot apply is never in the log."""
        row = await self.history.version(name, version)
        if row.status != "ready":
            raise VersionUnavailable(f"version {version} is {row.status}", field="version")

    async def _command(
        self, name: str, kind: RecordKind, args: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> Any:  # fmt: skip
        """Makes a command durable, then runs it as the model's only writer, in order with its
        batches."""
        live = self.live(name)
        self.storage.check()
        await self._history_writable(live)
        return await self.submitter.command(live, kind, args or {}, arrays or {})

    async def _history_writable(self, live: LiveModel) -> None:
        """A model whose history writes stopped on a failure takes no change until they are
        written: tried again here first, and refused before anything is logged if they fail."""
        behind = live.recorder.behind
        if behind is None or behind.failure is None:
            return

        def write() -> None:
            with self.storage.writing(refusal=True), database_reachable(NOTHING_APPLIED):
                live.recorder.catch_up()

        await to_thread.run_sync(write)


NOTHING_APPLIED = "the model's history waits for it; nothing was applied, retry later"


def _written_or_logged(live: LiveModel) -> None:
    """At a stop: the model's queued history writes, or an error saying the log keeps them."""
    try:
        live.recorder.catch_up()
    except Exception as exc:
        log.error("model %s: history not written at stop (the log replays it): %s", live.name, exc)
