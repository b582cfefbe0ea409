"""The live-model hub: every model's learner (head, served version, best version), resident.

This is the service layer the routes call. A change to a model is appended to its
write-ahead log (fsynced) before it is queued, so an acknowledged batch survives a crash; the
model's single worker applies records in order off the event loop. Predict reads the served
snapshot, which is replaced by assignment and never modified in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
from anyio import to_thread
from pydantic import ValidationError

from models.spec import NetworkSpec
from service.api.schemas import CreateModel
from service.config import Settings
from service.errors import (
    InvalidInput,
    ModelExists,
    ModelNotFound,
    ModelUnavailable,
    VersionUnavailable,
)
from service.kinds import RecordKind
from service.learning.compilation import effective_mode
from service.learning.head import TrainingHead
from service.learning.learner import BestVersion, Control
from service.learning.race.candidates import Race, new_candidate
from service.learning.race.plan import plan_candidates
from service.learning.served import Predictions, ServedModel, decode_outputs, to_device
from service.learning.trainer import Limits
from service.learning.training_config import TrainingConfig
from service.runtime.assembly import Assembler
from service.runtime.history import History
from service.runtime.live import FitOutcome, LiveModel, StreamGuard, Trained
from service.runtime.metrics import Metrics
from service.runtime.microbatch import MicroBatcher
from service.runtime.notify import Notifier
from service.runtime.submit import LocalLog, Submitter, consume
from service.storage.db.tables import ModelRow, VersionRow
from service.storage.guard import StorageGuard, volumes_of
from service.storage.registry import NewModel, NewVersion, Registry
from service.storage.wal import ModelLog
from service.storage.weightstore import WeightStorage
from service.streaming.cluster import Cluster, OutcomeLate

log = logging.getLogger("gradual.hub")


class ModelHub:
    """Every model this process holds, and the entry points the routes call.

    Writes (partial-fit, validation rows, commands) are logged, then queued to the model's
    single writer; reads (predict, views) use the status the writer last published. With
    Redis, the submitter carries writes through the model's stream to its owner instead."""

    def __init__(
        self, settings: Settings, registry: Registry, store: WeightStorage,
        *, metrics: Metrics | None = None,
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
        self.assembly = Assembler(
            settings, registry, store, device=self.device, limits=self.limits,
            notifier=self.notifier, storage=self.storage,
        )  # fmt: skip
        self.executor = self.assembly.executor
        self.versions = self.assembly.versions
        self.batcher = MicroBatcher(
            max_batch=settings.predict_max_batch, max_wait_s=settings.predict_max_wait_ms / 1000,
            inline_max_s=settings.predict_inline_ms / 1000,
            on_batch=lambda _key, rows, _requests: self.metrics.predict_rows.observe(rows),
        )  # fmt: skip
        # Where changes go: the local log here; the lifespan swaps in the Redis stream.
        self.submitter: Submitter = LocalLog(self.executor, self.storage)
        self.failed: dict[str, str] = {}
        self.cluster: Cluster | None = None  # set when Redis coordinates several replicas
        self._models: dict[str, LiveModel] = {}
        self._creating: set[str] = set()

    # -- lookup ---------------------------------------------------------------------------

    def live(self, name: str) -> LiveModel:
        try:
            return self._models[name]
        except KeyError:
            if name in self.failed:  # known, but not loaded: a 503, not a 404
                raise ModelUnavailable(name, self.failed[name]) from None
            raise ModelNotFound(name) from None

    def all(self) -> list[LiveModel]:
        return sorted(self._models.values(), key=lambda model: model.name)

    def has(self, name: str) -> bool:
        return name in self._models

    # -- start and stop -------------------------------------------------------------------

    async def load_all(self) -> None:
        """Brings every model back: its latest snapshot, then the log after it (run at start)."""
        for row in await to_thread.run_sync(self.registry.models):
            try:
                self._models[row.name] = await to_thread.run_sync(self.assembly.restore, row)
            except (VersionUnavailable, ModelUnavailable, OSError) as exc:
                self.failed[row.name] = str(exc)
                log.error("model %s not loaded: %s", row.name, exc)

    async def close(self) -> None:
        """Graceful stop: finish the queued work, snapshot, close the logs."""
        await self.batcher.close()
        for live in self.all():
            await live.pipeline.close()
            if live.seq != live.snapshot_seq:
                await to_thread.run_sync(self.executor.snapshot_or_defer, live, live.seq)
            if live.log is not None:
                live.log.close()
        if isinstance(self.submitter, LocalLog):
            self.submitter.close()

    # -- lifecycle ------------------------------------------------------------------------

    async def create(self, request: CreateModel) -> LiveModel:
        _check_monitor(request.training, request.spec)
        _check_buffer(request.training, request.spec)
        if request.name in self._models or request.name in self._creating:
            raise ModelExists(request.name)
        self.storage.check()
        self._creating.add(request.name)
        try:
            live = await to_thread.run_sync(self._create_written, request)
        finally:
            self._creating.discard(request.name)
        self._models[live.name] = live
        await self.submitter.created(live.name)
        return live

    def _create_written(self, request: CreateModel) -> LiveModel:
        with self.storage.writing():
            return self._create(request)

    def _create(self, request: CreateModel) -> LiveModel:
        new = NewModel(
            name=request.name, task=request.spec.task, spec=request.spec.model_dump(),
            optimizer=request.optimizer.model_dump(), training=request.training.model_dump(),
            seed=request.seed,
        )  # fmt: skip
        race = self._new_race(request)
        if race is None:
            head = TrainingHead(
                request.spec, request.optimizer, seed=request.seed, device=self.device
            )
        else:
            assert race.leader.head is not None
            head = race.leader.head
        checkpoint = head.checkpoint()
        written: list[NewVersion] = []

        def first_version(model_id: int) -> NewVersion:
            written.append(
                NewVersion(0, 0, {}, "init", None, self.store.write(model_id, checkpoint))
            )
            return written[-1]

        try:
            row, _ = self.registry.create_model(new, first_version)
        except Exception:
            for version in written:  # its row never committed
                self.store.remove(version.file.path)
            raise
        served = ServedModel.from_state(
            head.spec, 1, checkpoint.network, self.device,
            compiled=self.limits.compile_predict,
        )  # fmt: skip
        best = BestVersion(1, head.state(), None)
        live = self.assembly.live(
            row, head, served, best, Control(), request.training, 1, 0, race=race
        )
        self.executor.snapshot(live, 0)  # the state replay starts from
        return live

    def _new_race(self, request: CreateModel) -> Race | None:
        if request.search is None:
            return None
        plans = plan_candidates(
            request.search, spec=request.spec, optimizer=request.optimizer,
            training=request.training, seed=request.seed,
        )  # fmt: skip
        return Race(request.search, [new_candidate(plan, self.device) for plan in plans])

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
            self.registry.delete_model(live.id)
            if live.log is not None:
                live.log.close()
            self.store.remove_model(live.id)
            ModelLog.remove(self.settings.wal_dir / f"m{live.id}")

        await live.pipeline.run(delete)
        self._models.pop(name, None)
        self.versions.forget(live.id)
        await self.submitter.deleted(name)

    # -- serving --------------------------------------------------------------------------

    async def predict(
        self, name: str, inputs: np.ndarray, version: int | None
    ) -> tuple[int, Predictions]:
        live = self.live(name)
        served = live.status.served  # one read: a concurrent swap cannot split this request
        if version is not None and version != served.version:
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
        _check_monitor(training, live.spec)
        _check_buffer(training, live.spec)
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
        return await self.submitter.command(live, kind, args or {}, arrays or {})

    # -- scale-out ------------------------------------------------------------------------

    async def take_over(self, name: str, fence: int) -> LiveModel:
        """Becomes the model's owner: its committed state, fresh from the database."""
        live = await to_thread.run_sync(self.assembly.restore, self.registry.model(name))
        live.own(fence)
        self._models[name] = live
        return live

    async def discover(self, name: str) -> None:
        """Loads a model another replica created, if the database has it (else: a 404 later)."""
        try:
            row = await to_thread.run_sync(self.registry.model, name)
        except ModelNotFound:
            return
        await self.refresh([row], owned=set(), force={name}, prune=False)

    async def step_down(self, name: str) -> None:
        """Drops what an owner computed but could not commit: back to the committed state."""
        rows = {row.name: row for row in await to_thread.run_sync(self.registry.models)}
        # the models it still owns are not followers: their live state is not reloaded
        owned = set(self.cluster.owned) - {name} if self.cluster is not None else set()
        await self.refresh(list(rows.values()), owned=owned, force={name})

    async def refresh(
        self, rows: Sequence[ModelRow], *, owned: set[str], force: Collection[str] = (),
        prune: bool = True,
    ) -> None:  # fmt: skip
        """Keeps the models this replica does not own in step with the database."""
        for row in rows:
            live = self._models.get(row.name)
            if row.name in owned or row.name in self._creating:
                continue
            if live is not None and live.fence is not None and row.name not in force:
                continue  # an owner's copy (one being taken over, too): never a follower's

            if live is None or row.name in force or _moved(live, row):
                try:
                    restored = await to_thread.run_sync(self.assembly.restore, row)
                except (VersionUnavailable, OSError) as exc:
                    log.warning("model %s not refreshed: %s", row.name, exc)
                    continue
                # a takeover may have installed the owner's copy while this one loaded
                if self._models.get(row.name) is live:
                    self._models[row.name] = restored
        names = {row.name for row in rows} | owned | self._creating
        for gone in set(self._models) - names if prune else ():
            self.versions.forget(self._models.pop(gone).id)


def _moved(live: LiveModel, row: ModelRow) -> bool:
    """Whether the owner committed a newer state (or served version) than this copy holds."""
    if row.snapshot_seq is not None and row.snapshot_seq != live.snapshot_seq:
        return True
    return row.served_version != live.status.served_version


def _check_monitor(training: TrainingConfig, spec: NetworkSpec) -> None:
    try:
        training.check_task(spec.task)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="training.monitor") from None


# The validation buffer is allocated whole on the device: rows × features is bounded so that a
# spec cannot ask for tens of gigabytes (a 422, not an allocation failure).
MAX_BUFFER_VALUES = 50_000_000


def _check_buffer(training: TrainingConfig, spec: NetworkSpec) -> None:
    values = training.buffer_size * (spec.inputs + spec.outputs)
    if values > MAX_BUFFER_VALUES:
        most = MAX_BUFFER_VALUES // (spec.inputs + spec.outputs)
        raise InvalidInput(
            f"buffer_size {training.buffer_size} × {spec.inputs} features is too large; "
            f"at most {most} rows for this spec",
            field="training.buffer_size",
        )
