"""The live-model hub: every model's training head and served version, resident on the device.

This is the service layer the routes call. Torch work and SQL run in worker threads, so the
event loop never blocks; each model has one writer at a time (its lock), while predict reads
the served snapshot, which is replaced by assignment and never modified in place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from anyio import to_thread

from models.spec import NetworkSpec, OptimizerSpec
from service.config import Settings
from service.db.tables import EventRow, ModelRow, VersionRow
from service.errors import ModelExists, ModelNotFound, VersionUnavailable
from service.learning.config import TrainingConfig
from service.learning.head import TrainingHead
from service.learning.trainer import FitResult, Limits, fit
from service.registry import NewModel, NewVersion, Registry
from service.schemas import CreateModel
from service.served import Predictions, ServedModel
from service.version_cache import VersionCache
from service.weights import Checkpoint, WeightStore

log = logging.getLogger("gradual.hub")


@dataclass
class LiveModel:
    """A model in memory: its row's identity and config, the head that learns, what is served."""

    id: int
    name: str
    row: ModelRow
    training: TrainingConfig
    optimizer: OptimizerSpec
    head: TrainingHead
    head_version: int
    served: ServedModel
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def spec(self) -> NetworkSpec:
        return self.head.spec


@dataclass(frozen=True)
class FitOutcome:
    model: LiveModel
    result: FitResult


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
        head_row = self.registry.version(row, row.head_version)
        head = self._new_head(row)
        head.load_checkpoint(self.store.read(head_row.weights_path, head_row.weights_sha256))
        served = self._load_version(row, row.served_version)
        return self._live(row, head, served)

    # -- lifecycle ------------------------------------------------------------------------

    async def create(self, request: CreateModel) -> LiveModel:
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
            name=request.name,
            task=request.spec.task,
            spec=request.spec.model_dump(),
            optimizer=request.optimizer.model_dump(),
            training=request.training.model_dump(),
            seed=request.seed,
        )
        head = TrainingHead(request.spec, request.optimizer, seed=request.seed, device=self.device)
        checkpoint = head.checkpoint()
        written: list[NewVersion] = []

        def first_version(model_id: int) -> NewVersion:
            written.append(self._version(head, model_id, checkpoint, reason="init", parent=None))
            return written[-1]

        try:
            row, _ = self.registry.create_model(new, first_version)
        except Exception:
            for version in written:  # its row never committed
                self.store.remove(version.file.path)
            raise
        served = ServedModel.from_state(request.spec, 1, checkpoint.network, self.device)
        return self._live(row, head, served)

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
        served = live.served  # one read: a concurrent swap cannot split this request
        if version is not None and version != served.version:
            served = await to_thread.run_sync(self._load_version, live.row, version)
        tensor = torch.from_numpy(inputs).to(self.device, non_blocking=True)
        return served.version, await to_thread.run_sync(served.predict, tensor)

    def _load_version(self, row: ModelRow, number: int) -> ServedModel:
        def load() -> ServedModel:
            version = self.registry.version(row, number)
            if version.status != "ready":
                raise VersionUnavailable(f"version {number} is {version.status}", field="version")
            checkpoint = self.store.read(version.weights_path, version.weights_sha256)
            spec = NetworkSpec.model_validate(row.spec)
            return ServedModel.from_state(spec, number, checkpoint.network, self.device)

        return self.versions.get_or_load((row.id, number), load)

    # -- training -------------------------------------------------------------------------

    async def partial_fit(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> FitOutcome:
        live = self.live(name)
        async with live.lock:
            result = await to_thread.run_sync(self._fit, live, inputs, targets)
        return FitOutcome(live, result)

    def _fit(self, live: LiveModel, inputs: np.ndarray, targets: np.ndarray) -> FitResult:
        x = torch.from_numpy(inputs).to(self.device)
        y = torch.from_numpy(targets).to(self.device)
        return fit(
            live.head, x, y, training=live.training, optimizer=live.optimizer, limits=self.limits
        )

    # -- versions -------------------------------------------------------------------------

    async def checkpoint(self, name: str, *, reason: str = "manual") -> VersionRow:
        live = self.live(name)
        async with live.lock:
            checkpoint = await to_thread.run_sync(live.head.checkpoint)
            row = await to_thread.run_sync(self._add_version, live, checkpoint, reason)
            live.head_version = row.number
        return row

    def _add_version(self, live: LiveModel, checkpoint: Checkpoint, reason: str) -> VersionRow:
        new = self._version(live.head, live.id, checkpoint, reason=reason, parent=live.head_version)
        try:
            return self.registry.add_version(live.id, new, serve=False, event_data={})
        except Exception:
            self.store.remove(new.file.path)  # the row never committed: the file is an orphan
            raise

    def _version(
        self,
        head: TrainingHead,
        model_id: int,
        checkpoint: Checkpoint,
        *,
        reason: str,
        parent: int | None,
    ) -> NewVersion:
        return NewVersion(
            step=head.step,
            samples_seen=head.samples_seen,
            metrics={},
            reason=reason,
            parent=parent,
            file=self.store.write(model_id, checkpoint),
        )

    async def rollback(self, name: str, version: int) -> ServedModel:
        """Serves `version` and resets the head to it: weights, optimizer state, counters."""
        live = self.live(name)
        async with live.lock:
            row = await to_thread.run_sync(self.registry.version, live.row, version)
            if row.status != "ready":
                raise VersionUnavailable(f"version {version} is {row.status}", field="version")
            checkpoint = await to_thread.run_sync(
                self.store.read, row.weights_path, row.weights_sha256
            )
            served = ServedModel.from_state(live.spec, version, checkpoint.network, self.device)
            data = {"from_version": live.served.version, "head_version": live.head_version}
            await to_thread.run_sync(
                lambda: self.registry.move_pointers(
                    live.id, kind="rollback", version=version, head=True, data=data
                )
            )
            await to_thread.run_sync(live.head.load_checkpoint, checkpoint)
            live.head_version = version
            live.served = served
        return served

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

    def _live(self, row: ModelRow, head: TrainingHead, served: ServedModel) -> LiveModel:
        return LiveModel(
            id=row.id,
            name=row.name,
            row=row,
            training=TrainingConfig.model_validate(row.training),
            optimizer=OptimizerSpec.model_validate(row.optimizer),
            head=head,
            head_version=row.head_version,
            served=served,
        )
