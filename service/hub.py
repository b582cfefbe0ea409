"""The live-model hub: every model's learner (head, served version, best version), resident.

This is the service layer the routes call. Torch work and SQL run in worker threads, so the
event loop never blocks; each model has one writer at a time (its lock), while predict reads
the served snapshot, which is replaced by assignment and never modified in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from anyio import to_thread
from pydantic import ValidationError

from models.spec import NetworkSpec, OptimizerSpec
from service.config import Settings
from service.db.tables import EventRow, ModelRow, VersionRow
from service.errors import InvalidInput, ModelExists, ModelNotFound, VersionUnavailable
from service.learning.config import TrainingConfig
from service.learning.head import TrainingHead
from service.learning.learner import BestVersion, Control, LearnReport, OnlineLearner
from service.learning.trainer import Limits
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
    """A model in memory: its row (identity, spec, seed) and the learner that owns its tensors."""

    row: ModelRow
    learner: OnlineLearner
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def spec(self) -> NetworkSpec:
        return self.learner.head.spec


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
        return self._live(row, head, served, best, control)

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
        async with live.lock:
            await to_thread.run_sync(self.registry.delete_model, live.id)
            self._models.pop(name, None)
            self.versions.forget(live.id)
            await to_thread.run_sync(self.store.remove_model, live.id)

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

    async def partial_fit(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> LearnReport:
        learner = self.live(name).learner
        x, y = self._tensors(inputs, targets)
        return await self._write(name, lambda: learner.learn(x, y, inputs, targets))

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
        """Runs `work` as the model's only writer, off the event loop."""
        live = self.live(name)
        async with live.lock:
            return await to_thread.run_sync(work)

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
        control: Control,
    ) -> LiveModel:  # fmt: skip
        learner = OnlineLearner(
            head=head, served=served, best=best, head_version=row.head_version,
            training=TrainingConfig.model_validate(row.training),
            optimizer=OptimizerSpec.model_validate(row.optimizer), seed=row.seed,
            limits=self.limits, recorder=ModelRecorder(self.registry, self.store, row.id),
            control=control,
        )  # fmt: skip
        return LiveModel(row, learner)


def _check_monitor(training: TrainingConfig, spec: NetworkSpec) -> None:
    try:
        training.check_task(spec.task)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="training.monitor") from None
