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
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
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
from service.learning.compilation import effective_mode
from service.learning.head import TrainingHead
from service.learning.learner import BestVersion, Control
from service.learning.race.candidates import Race, new_candidate
from service.learning.race.plan import plan_candidates
from service.learning.served import Predictions, ServedModel, decode_outputs, to_device
from service.learning.trainer import Limits
from service.learning.training_config import TrainingConfig
from service.runtime import executor as commands
from service.runtime.assembly import Assembler
from service.runtime.live import FitOutcome, LiveModel, StreamGuard, Trained
from service.runtime.metrics import Metrics
from service.runtime.microbatch import MicroBatcher
from service.runtime.notify import Notifier
from service.storage.db.tables import EventRow, ModelRow, VersionRow
from service.storage.registry import NewModel, NewVersion, Registry
from service.storage.wal import ModelLog, Record
from service.storage.weightstore import WeightStorage
from service.streaming.cluster import Cluster, OutcomeLate
from service.streaming.entries import Entry

log = logging.getLogger("gradual.hub")


class ModelHub:
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
        self.assembly = Assembler(
            settings, registry, store, device=self.device, limits=self.limits,
            notifier=self.notifier,
        )  # fmt: skip
        self.executor = self.assembly.executor
        self.versions = self.assembly.versions
        self.batcher = MicroBatcher(
            max_batch=settings.predict_max_batch, max_wait_s=settings.predict_max_wait_ms / 1000,
            on_batch=lambda _key, rows, _requests: self.metrics.predict_rows.observe(rows),
        )  # fmt: skip
        # The log's fsyncs run on threads of their own, not on the worker pool: a model's
        # training then keeps to one pool thread (and one malloc arena) instead of alternating
        # with the fsyncs, which grew the process by ~80 MB over a long stream.
        self.syncer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gradual-fsync")
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
            except (VersionUnavailable, OSError) as exc:
                self.failed[row.name] = str(exc)
                log.error("model %s not loaded: %s", row.name, exc)

    async def close(self) -> None:
        """Graceful stop: finish the queued work, snapshot, close the logs."""
        await self.batcher.close()
        for live in self.all():
            await live.pipeline.close()
            if live.seq != live.snapshot_seq:
                await to_thread.run_sync(self.executor.snapshot, live, live.seq)
            if live.log is not None:
                live.log.close()
        self.syncer.shutdown(wait=True)

    # -- lifecycle ------------------------------------------------------------------------

    async def create(self, request: CreateModel) -> LiveModel:
        _check_monitor(request.training, request.spec)
        _check_buffer(request.training, request.spec)
        if request.name in self._models or request.name in self._creating:
            raise ModelExists(request.name)
        self._creating.add(request.name)
        try:
            live = await to_thread.run_sync(self._create, request)
        finally:
            self._creating.discard(request.name)
        self._models[live.name] = live
        if self.cluster is not None:
            await self.cluster.announce(live.name)
        return live

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
        learner = self.assembly.learner(
            row, head, served, best, Control(), request.training, 1, race=race
        )
        live = self.assembly.live(row, learner, 0)
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
        if self.cluster is not None:
            await self.cluster.forget(name)

    # -- serving --------------------------------------------------------------------------

    async def predict(
        self, name: str, inputs: np.ndarray, version: int | None
    ) -> tuple[int, Predictions]:
        live = self.live(name)
        served = live.learner.served  # one read: a concurrent swap cannot split this request
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
            return FitOutcome(None, queued=await self._depth(live) if self.cluster else position)
        try:
            return FitOutcome(await future, duplicate=resent)
        except OutcomeLate:  # durable in the stream: it will apply
            return FitOutcome(None, queued=await self._depth(live))

    async def _depth(self, live: LiveModel) -> int:
        if self.cluster is not None:
            return await self.cluster.backlog(live.name)
        return live.pipeline.depth

    async def submit_fit(
        self, name: str, inputs: np.ndarray, targets: np.ndarray, *, batch_id: str | None,
        wait: bool = True, guard: StreamGuard | None = None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        """The batch's future once it is durable, or None for a batch id applied already.

        A resend of a batch still queued gets the pending attempt's future: its answer is that
        attempt's outcome (a refusal included), never an early "duplicate"."""
        live = self.live(name)
        arrays = {"inputs": inputs, "targets": targets}
        if self.cluster is not None:
            remote = await self.cluster.submit(live, Entry("fit", {}, arrays, batch_id))
            if remote is not None and not wait:
                remote.add_done_callback(_consume)
            return remote
        async with live.ingest:
            if batch_id is not None and (pending := live.inflight.get(batch_id)) is not None:
                return pending
            if batch_id is not None and live.ledger.seen(batch_id):
                return None
            live.pipeline.ensure_room()
            # Written from the loop (a buffered write, no thread hop); fsynced in a thread.
            record = self._append(live, commands.FIT, {"batch_id": batch_id}, arrays, sync=False)
            run = partial(self.executor.run, live, record, guard=guard, wait=wait)
            # The batch trains while its record goes to disk; it is answered after both.
            synced = asyncio.ensure_future(self._sync(live, record.seq))
            trained = live.pipeline.submit(run, batch=True)
            future: asyncio.Future[Trained] = asyncio.ensure_future(_after(synced, trained))
            if not wait:
                await asyncio.shield(synced)  # a queued answer is still an acknowledgement
            if batch_id is not None:
                live.inflight[batch_id] = future
                future.add_done_callback(lambda _: live.inflight.pop(batch_id, None))
        if not wait:
            future.add_done_callback(_consume)
        return future

    async def add_validation(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> int:
        arrays = {"inputs": inputs, "targets": targets}
        size: int = await self._command(name, commands.VALIDATION, arrays=arrays)
        return size

    async def stop(self, name: str) -> None:
        await self._command(name, commands.STOP)

    async def resume(self, name: str) -> None:
        await self._command(name, commands.RESUME)

    async def update_training(self, name: str, changes: dict[str, Any]) -> TrainingConfig:
        live = self.live(name)
        try:
            training = TrainingConfig.model_validate(live.learner.training.model_dump() | changes)
        except ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"]) or "training"
            raise InvalidInput(f"{location}: {first['msg']}", field=location) from None
        _check_monitor(training, live.spec, field="monitor")
        _check_buffer(training, live.spec, field="buffer_size")
        await self._command(name, commands.TRAINING, {"training": training.model_dump()})
        return training

    async def checkpoint(self, name: str) -> VersionRow:
        number: int = await self._command(name, commands.CHECKPOINT)
        return await self.version_row(name, number)

    async def rollback(self, name: str, version: int) -> None:
        """Serves `version` and resets the head to it: weights and optimizer state."""
        await self._version_exists(name, version)
        await self._command(name, commands.ROLLBACK, {"version": version})

    async def promote(self, name: str, version: int) -> None:
        await self._version_exists(name, version)
        await self._command(name, commands.PROMOTE, {"version": version})

    async def _version_exists(self, name: str, version: int) -> None:
        """Checked before logging, so a command that cannot apply is never in the log."""
        row = await self.version_row(name, version)
        if row.status != "ready":
            raise VersionUnavailable(f"version {version} is {row.status}", field="version")

    async def _command(
        self, name: str, kind: str, args: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> Any:  # fmt: skip
        """Logs a command, then runs it as the model's only writer, in order with its batches."""
        live = self.live(name)
        if self.cluster is not None:
            future = await self.cluster.submit(live, Entry(kind, args or {}, arrays or {}))
            return None if future is None else await future
        async with live.ingest:
            record = await to_thread.run_sync(self._append, live, kind, args or {}, arrays or {})
            future = live.pipeline.submit(partial(self.executor.run, live, record), batch=False)
        return await future

    async def _sync(self, live: LiveModel, seq: int) -> None:
        if live.log is not None:
            await asyncio.get_running_loop().run_in_executor(self.syncer, live.log.sync, seq)

    def _append(
        self, live: LiveModel, kind: str, args: dict[str, Any], arrays: dict[str, np.ndarray],
        *, sync: bool = True,
    ) -> Record:  # fmt: skip
        if live.log is not None:
            write = live.log.append if sync else live.log.write
            record = write(kind, args, arrays)
        else:
            record = Record(live.seq + 1, kind, args, arrays)
        live.seq = record.seq
        return record

    # -- scale-out ------------------------------------------------------------------------

    async def take_over(self, name: str, fence: int) -> LiveModel:
        """Becomes the model's owner: its committed state, fresh from the database."""
        live = await to_thread.run_sync(self.assembly.restore, self.registry.model(name))
        live.fence = live.learner.recorder.fence = fence
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

    # -- history --------------------------------------------------------------------------

    async def version_rows(self, name: str) -> Sequence[VersionRow]:
        return await to_thread.run_sync(self.registry.versions, self.live(name).id)

    async def version_row(self, name: str, number: int) -> VersionRow:
        return await to_thread.run_sync(self.registry.version, self.live(name).row, number)

    async def events(
        self, name: str, since: int, *, kinds: Sequence[str] | None = None, limit: int = 1000
    ) -> Sequence[EventRow]:
        model_id = self.live(name).id
        return await to_thread.run_sync(
            lambda: self.registry.events(model_id, since=since, kinds=kinds, limit=limit)
        )

    async def wait_for_events(self, name: str, timeout: float) -> None:
        await self.notifier.wait(self.live(name).id, timeout)

    def listening(self, name: str) -> AbstractContextManager[None]:
        return self.notifier.listening(self.live(name).id)


def _moved(live: LiveModel, row: ModelRow) -> bool:
    """Whether the owner committed a newer state (or served version) than this copy holds."""
    if row.snapshot_seq is not None and row.snapshot_seq != live.snapshot_seq:
        return True
    return row.served_version != live.learner.served.version


async def _after(synced: asyncio.Future[None], trained: asyncio.Future[Trained]) -> Trained:
    """The batch's outcome, once its record is on disk too (acknowledged ⇒ durable)."""
    try:
        await synced
    except BaseException:
        trained.add_done_callback(_consume)
        raise
    return await trained


def _consume(future: asyncio.Future[Any]) -> None:
    """Marks an unawaited job's exception as seen (it is in the event log)."""
    if not future.cancelled():
        future.exception()


def _check_monitor(
    training: TrainingConfig, spec: NetworkSpec, *, field: str = "training.monitor"
) -> None:
    try:
        training.check_task(spec.task)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from None


# The validation buffer is allocated whole on the device: rows × features is bounded so that a
# spec cannot ask for tens of gigabytes (a 422, not an allocation failure).
MAX_BUFFER_VALUES = 50_000_000


def _check_buffer(
    training: TrainingConfig, spec: NetworkSpec, *, field: str = "training.buffer_size"
) -> None:
    values = training.buffer_size * (spec.inputs + spec.outputs)
    if values > MAX_BUFFER_VALUES:
        most = MAX_BUFFER_VALUES // (spec.inputs + spec.outputs)
        raise InvalidInput(
            f"buffer_size {training.buffer_size} × {spec.inputs} features is too large; "
            f"at most {most} rows for this spec",
            field=field,
        )
