"""A reader's models: each one's served version, loaded read-only, swapped when the trainer's
feed says it changed. Predict answers as the trainer's hub does; nothing here writes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from anyio import to_thread

from models.spec import NetworkSpec
from service.errors import GradualError, ModelNotFound
from service.learning.served import Predictions, ServedModel, decode_outputs, to_device
from service.runtime.hub import ModelHub
from service.storage.db.tables import ModelRow
from service.workers.channel import Served

log = logging.getLogger("gradual.reader")


@dataclass(frozen=True)
class ServedCopy:
    """One model as a reader holds it: its row and its served version (both immutable)."""

    row: ModelRow
    served: ServedModel

    @property
    def spec(self) -> NetworkSpec:
        return self.served.spec


class ServedModels:
    """What the predict routes of a reader call, in place of the trainer's hub: `live(name)`
    for the spec, `predict`. The loading, the batching and the version cache are the hub's
    (`hub` is never given a model: it loads nothing of its own, logs and writes nothing)."""

    cluster = None  # the routes' "discover a model first" applies to replicas, not readers

    def __init__(self, hub: ModelHub) -> None:
        self.hub = hub
        self._models: dict[str, ServedCopy] = {}

    def __len__(self) -> int:
        return len(self._models)

    def has(self, name: str) -> bool:
        return name in self._models

    def live(self, name: str) -> ServedCopy:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(name) from None

    async def predict(
        self, name: str, inputs: np.ndarray, version: int | None
    ) -> tuple[int, Predictions]:
        copy = self.live(name)
        served = copy.served  # one read: a concurrent swap cannot split this request
        if version is not None and version != served.version:
            load = self.hub.assembly.load_version
            served = await to_thread.run_sync(load, copy.row, version)
        rows = to_device(inputs, self.hub.device)
        outputs = await self.hub.batcher.submit(copy.row.id, served, rows)
        return served.version, decode_outputs(served.spec, outputs)

    async def follow(self, served: Served) -> None:
        """Brings the copies in line with the trainer's served versions: loads what changed,
        drops what is gone. A model that cannot be loaded is dropped too (its predictions
        are then forwarded to the trainer, which answers them as it always does)."""
        for name in set(self._models) - set(served):
            self.hub.versions.forget(self._models.pop(name).row.id)
        for name, (model_id, version) in served.items():
            held = self._models.get(name)
            if held is not None and held.row.id == model_id and held.served.version == version:
                continue
            try:
                self._models[name] = await to_thread.run_sync(self._load, name, version)
            except (GradualError, OSError) as exc:
                log.warning("model %s v%d not loaded here: %s", name, version, exc)
                self._models.pop(name, None)

    def _load(self, name: str, version: int) -> ServedCopy:
        row = self.hub.registry.model(name)
        return ServedCopy(row, self.hub.assembly.load_version(row, version))

    async def close(self) -> None:
        await self.hub.batcher.close()
