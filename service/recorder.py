"""Writes what a model's learner decides: versions (file first, then row), pointers, events."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from service.learning.head import TrainingHead
from service.learning.ledger import BatchLedger
from service.registry import NewVersion, Pointers, Registry
from service.weights import WeightStore

log = logging.getLogger("gradual.recorder")


class ModelRecorder:
    """One model's link to the registry and the weight store; called from its writer thread."""

    def __init__(
        self, registry: Registry, store: WeightStore, model_id: int, ledger: BatchLedger
    ) -> None:
        self.registry = registry
        self.store = store
        self.model_id = model_id
        self.ledger = ledger

    def checkpoint(
        self, head: TrainingHead, *, reason: str, metrics: dict[str, Any], parent: int | None,
        pointers: Pointers,
    ) -> int:  # fmt: skip
        """Writes and fsyncs the file, then commits the row pointing at it; returns its number.

        The batch ids applied since the last checkpoint are recorded in the same transaction:
        this version's weights hold their effect.
        """
        batch_ids = self.ledger.unrecorded()
        pointers = replace(pointers, batch_ids=tuple(batch_ids))
        file = self.store.write(self.model_id, head.checkpoint({"control": pointers.control}))
        new = NewVersion(
            step=head.step, samples_seen=head.samples_seen, metrics=metrics, reason=reason,
            parent=parent, file=file,
        )  # fmt: skip
        try:
            row = self.registry.add_version(
                self.model_id, new, pointers=pointers, event_data=metrics
            )
        except Exception:
            self.store.remove(file.path)  # its row never committed: the file would be an orphan
            raise
        self.ledger.recorded(batch_ids)
        return row.number

    def prune(self, *, keep: int, protected: set[int]) -> None:
        """Version rows stay forever; files beyond the newest `keep` go (served and best stay)."""
        for path in self.registry.archive_old_versions(
            self.model_id, keep=keep, protected=protected
        ):
            self.store.remove(path)

    def move(
        self, kind: str, version: int | None, pointers: Pointers, data: dict[str, Any]
    ) -> None:
        self.registry.move_pointers(
            self.model_id, kind=kind, version=version, pointers=pointers, data=data
        )

    def event(self, kind: str, version: int | None, data: dict[str, Any]) -> None:
        self.registry.add_event(self.model_id, kind, version, data)
