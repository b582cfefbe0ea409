"""The live-model hub: every model's learner (head, served version, best version), resident.

This is the service layer the routes call. Torch work and SQL run in worker threads, so the
event loop never blocks; each model has one writer (its pipeline's worker), while predict reads
the served snapshot, which is replaced by assignment and never modified in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from anyio import to_thread
from pydantic import ValidationError

from models.spec import NetworkSpec, OptimizerSpec
from service.config import Settings
from service.db.tables import EventRow, ModelRow, VersionRow
from service.errors import (
    BatchSkipped,
    GradualError,
    InvalidInput,
    ModelExists,
    ModelNotFound,
    VersionUnavailable,
)
from service.learning.config import TrainingConfig
from service.learning.head import TrainingHead
from service.learning.learner import BestVersion, Control, LearnReport, OnlineLearner
from service.learning.ledger import BatchLedger
from service.learning.trainer import Limits
from service.pipeline import Pipeline
from service.recorder import ModelRecorder
from service.registry import NewModel, NewVersion, Registry
from service.schemas import CreateModel
from service.served import Predictions, ServedModel
from service.version_cache import VersionCache
from service.weights import Checkpoint, WeightStore

log = logging.getLogger("gradual.hub")
T = TypeVar("T")


@dataclass
class LiveModel:
    """A model in memory: its row (identity, spec, seed), the learner that owns its tensors,
    the ledger of applied batch ids, and the pipeline through which every change passes."""

    row: ModelRow
    learner: OnlineLearner
    ledger: BatchLedger
    pipeline: Pipeline

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def spec(self) -> NetworkSpec:
        return self.learner.head.spec


@dataclass(frozen=True)
class Trained:
    """A batch's report with the counters and served version right after it."""

    report: LearnReport
    step: int
    samples_seen: int
    version: int


@dataclass(frozen=True)
class FitOutcome:
    """A trained batch, or a duplicate's acknowledgement, or a queued position."""

    trained: Trained | None
    duplicate: bool = False
    queued: int | None = None


@dataclass
class StreamGuard:
    """Shared by one stream's batches: once a batch fails with `stop_on_error`, the rest skip."""

    stop_on_error: bool
    aborted: bool = False


class ModelHub:
    def __init__(self, settings: Settings, registry: Registry, store: WeightStore) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.device = settings.torch_device()
        self.limits = Limits(settings.max_weight_abs, settings.max_grad_norm)
        self.versions = VersionCache(capacity=8)
        self.failed: dict[str, str] = {}
        self._models: dict[str, LiveModel] = {}
        self._creating: set[str] = set()

    # -- lookup ---------------------------------------------------------------------------

    def live(self, name: str) -> LiveModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def all(self) -> list[LiveModel]:
        return sorted(self._models.values(), key=lambda model: model.name)

    # -- start ----------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Brings every model back at its last recorded state (run once, at start)."""
        for row in await to_thread.run_sync(self.registry.models):
            try:
                self._models[row.name] = await to_thread.run_sync(self._restore, row)
            except VersionUnavailable as exc:
                self.failed[row.name] = exc.message
                log.error("model %s not loaded: %s", row.name, exc.message)

    def _restore(self, row: ModelRow) -> LiveModel:
        head = self._new_head(row)
        head.load_checkpoint(self._read(row, row.head_version))
        control = Control.from_dict(row.control)
        if row.control:
            head.step, head.samples_seen = control.step, control.samples_seen
        best_number = row.best_version or row.head_version
        best_state = head.state_from(self._read(row, best_number))
        best = BestVersion(best_number, best_state, control.stopper.best)
        served = self._load_version(row, row.served_version)
        batch_ids = self.registry.applied_batch_ids(row.id, limit=self.settings.batch_id_memory)
        return self._live(row, head, served, best, control, batch_ids)

    # -- lifecycle ------------------------------------------------------------------------

    async def create(self, request: CreateModel) -> LiveModel:
        _check_monitor(request.training, request.spec)
        if request.name in self._models or request.name in self._creating:
            raise ModelExists(request.name)
        self._creating.add(request.name)
        try:
            live = await to_thread.run_sync(self._create, request)
        finally:
            self._creating.discard(request.name)
        self._models[live.name] = live
        return live

    def _create(self, request: CreateModel) -> LiveModel:
        new = NewModel(
            name=request.name, task=request.spec.task, spec=request.spec.model_dump(),
            optimizer=request.optimizer.model_dump(), training=request.training.model_dump(),
            seed=request.seed,
        )  # fmt: skip
        head = TrainingHead(request.spec, request.optimizer, seed=request.seed, device=self.device)
        checkpoint = head.checkpoint()
        written: list[NewVersion] = []

        def first_version(model_id: int) -> NewVersion:
            file = self.store.write(model_id, checkpoint)
            written.append(NewVersion(0, 0, {}, "init", None, file))
            return written[-1]

        try:
            row, _ = self.registry.create_model(new, first_version)
        except Exception:
            for version in written:  # its row never committed
                self.store.remove(version.file.path)
            raise
        served = ServedModel.from_state(request.spec, 1, checkpoint.network, self.device)
        return self._live(row, head, served, BestVersion(1, head.state(), None), Control())

    async def delete(self, name: str) -> None:
        live = self.live(name)

        def delete() -> None:
            self.registry.delete_model(live.id)
            self.store.remove_model(live.id)

        await self._write(name, delete)
        self._models.pop(name, None)
        self.versions.forget(live.id)

    # -- serving --------------------------------------------------------------------------

    async def predict(
        self, name: str, inputs: np.ndarray, version: int | None
    ) -> tuple[int, Predictions]:
        live = self.live(name)
        served = live.learner.served  # one read: a concurrent swap cannot split this request
        if version is not None and version != served.version:
            served = await to_thread.run_sync(self._load_version, live.row, version)
        tensor = torch.from_numpy(inputs).to(self.device, non_blocking=True)
        return served.version, await to_thread.run_sync(served.predict, tensor)

    def _load_version(self, row: ModelRow, number: int) -> ServedModel:
        def load() -> ServedModel:
            spec = NetworkSpec.model_validate(row.spec)
            return ServedModel.from_state(
                spec, number, self._read(row, number).network, self.device
            )

        return self.versions.get_or_load((row.id, number), load)

    def _read(self, row: ModelRow, number: int) -> Checkpoint:
        version = self.registry.version(row, number)
        if version.status != "ready":
            raise VersionUnavailable(f"version {number} is {version.status}", field="version")
        return self.store.read(version.weights_path, version.weights_sha256)

    # -- training -------------------------------------------------------------------------

    async def partial_fit(
        self, name: str, inputs: np.ndarray, targets: np.ndarray, *,
        batch_id: str | None = None, wait: bool = True,
    ) -> FitOutcome:  # fmt: skip
        """Queues a batch (429 when the queue is full) and, unless `wait` is off, awaits it."""
        future = self.submit_fit(name, inputs, targets, batch_id=batch_id, wait=wait)
        if future is None:
            return FitOutcome(None, duplicate=True)
        if not wait:
            return FitOutcome(None, queued=self.live(name).pipeline.depth)
        return FitOutcome(await future)

    def submit_fit(
        self, name: str, inputs: np.ndarray, targets: np.ndarray, *, batch_id: str | None,
        wait: bool = True, guard: StreamGuard | None = None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        """The batch's future, or None for a batch id applied (or queued) already."""
        live = self.live(name)
        if batch_id is not None and live.ledger.seen(batch_id):
            return None
        job = _FitJob(live, *self._tensors(inputs, targets), inputs, targets, batch_id, wait, guard)
        future = live.pipeline.submit(job.run, batch=True)
        if batch_id is not None:
            live.ledger.reserve(batch_id)
        if not wait:
            future.add_done_callback(_consume)
        return future

    async def add_validation(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> int:
        learner = self.live(name).learner
        x, y = self._tensors(inputs, targets)
        await self._write(name, lambda: learner.add_validation(x, y))
        return learner.buffer.size

    async def stop(self, name: str) -> None:
        learner = self.live(name).learner
        if learner.control.state == "training":
            await self._write(name, learner.stop)

    async def resume(self, name: str) -> None:
        learner = self.live(name).learner
        if learner.control.state == "stopped":
            await self._write(name, lambda: learner.resume("manual"))

    async def update_training(self, name: str, changes: dict[str, Any]) -> TrainingConfig:
        live = self.live(name)
        try:
            merged = live.learner.training.model_dump() | changes
            training = TrainingConfig.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"]) or "training"
            raise InvalidInput(f"{location}: {first['msg']}", field=location) from None
        _check_monitor(training, live.spec)

        def apply() -> None:
            self.registry.update_training(live.id, training.model_dump())
            live.learner.reconfigure(training)

        await self._write(name, apply)
        return training

    def _tensors(
        self, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(inputs).to(self.device),
            torch.from_numpy(targets).to(self.device),
        )

    async def _write(self, name: str, work: Callable[[], T]) -> T:
        """Runs `work` as the model's only writer, in order with its batches, off the loop."""
        return await self.live(name).pipeline.run(work)

    async def close(self) -> None:
        """Lets every model finish the work already queued (graceful shutdown)."""
        for live in self.all():
            await live.pipeline.close()

    # -- versions -------------------------------------------------------------------------

    async def checkpoint(self, name: str) -> VersionRow:
        live = self.live(name)
        number = await self._write(name, live.learner.checkpoint)
        return await self.version_row(name, number)

    async def rollback(self, name: str, version: int) -> None:
        """Serves `version` and resets the head to it: weights and optimizer state."""
        live = self.live(name)

        def reset() -> None:
            state = live.learner.head.state_from(self._read(live.row, version))
            live.learner.reset_to(version, state)

        await self._write(name, reset)

    async def promote(self, name: str, version: int) -> None:
        live = self.live(name)

        def promote() -> None:
            live.learner.promote(version, self._resident_or_load(live, version))

        await self._write(name, promote)

    def _resident_or_load(self, live: LiveModel, version: int) -> ServedModel:
        best = live.learner.best
        if best.version == version:  # no disk read: the best version is in device memory
            return ServedModel.from_state(live.spec, version, best.state.network, self.device)
        return self._load_version(live.row, version)

    async def version_rows(self, name: str) -> Sequence[VersionRow]:
        return await to_thread.run_sync(self.registry.versions, self.live(name).id)

    async def version_row(self, name: str, number: int) -> VersionRow:
        return await to_thread.run_sync(self.registry.version, self.live(name).row, number)

    async def events(self, name: str, since: int) -> Sequence[EventRow]:
        model_id = self.live(name).id
        return await to_thread.run_sync(lambda: self.registry.events(model_id, since=since))

    # -- helpers --------------------------------------------------------------------------

    def _new_head(self, row: ModelRow) -> TrainingHead:
        spec = NetworkSpec.model_validate(row.spec)
        optimizer = OptimizerSpec.model_validate(row.optimizer)
        return TrainingHead(spec, optimizer, seed=row.seed, device=self.device)

    def _live(
        self, row: ModelRow, head: TrainingHead, served: ServedModel, best: BestVersion,
        control: Control, batch_ids: list[str] | None = None,
    ) -> LiveModel:  # fmt: skip
        ledger = BatchLedger(self.settings.batch_id_memory, batch_ids or ())
        learner = OnlineLearner(
            head=head, served=served, best=best, head_version=row.head_version,
            training=TrainingConfig.model_validate(row.training),
            optimizer=OptimizerSpec.model_validate(row.optimizer), seed=row.seed,
            limits=self.limits, recorder=ModelRecorder(self.registry, self.store, row.id, ledger),
            control=control,
        )  # fmt: skip
        pipeline = Pipeline(self.settings.queue_batches, self.settings.retry_after_s)
        return LiveModel(row, learner, ledger, pipeline)


@dataclass(frozen=True)
class _FitJob:
    """One queued batch, run by the model's worker thread."""

    live: LiveModel
    x: torch.Tensor
    y: torch.Tensor
    inputs: np.ndarray
    targets: np.ndarray
    batch_id: str | None
    wait: bool
    guard: StreamGuard | None

    def run(self) -> Trained:
        learner, ledger, batch_id = self.live.learner, self.live.ledger, self.batch_id
        try:
            if self.guard is not None and self.guard.aborted:
                raise BatchSkipped("skipped: an earlier batch of this stream failed")
            report = learner.learn(self.x, self.y, self.inputs, self.targets)
        except Exception as exc:
            if batch_id is not None:
                ledger.release(batch_id)
            if self.guard is not None and self.guard.stop_on_error:
                self.guard.aborted = True
            if not self.wait:  # nobody awaits the answer: the event log says what happened
                learner.recorder.event("batch_failed", None, _failure(exc, batch_id))
            raise
        if batch_id is not None:
            ledger.applied(batch_id)
        head = learner.head
        return Trained(report, head.step, head.samples_seen, learner.served.version)


def _failure(exc: Exception, batch_id: str | None) -> dict[str, Any]:
    field = exc.field if isinstance(exc, GradualError) else None
    return {"batch_id": batch_id, "error": type(exc).__name__, "message": str(exc), "field": field}


def _consume(future: asyncio.Future[Any]) -> None:
    """Marks an unawaited job's exception as seen (it is in the event log)."""
    if not future.cancelled():
        future.exception()


def _check_monitor(training: TrainingConfig, spec: NetworkSpec) -> None:
    try:
        training.check_task(spec.task)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="training.monitor") from None
