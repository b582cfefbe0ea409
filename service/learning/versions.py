"""The versions a learner points at, and the only code that moves those pointers.

The head's version (the version its head started from), the best version (resident in
device memory, so a rollback reads no file), the served version, and the latest versions'
states kept in memory. Every move is recorded through the `Recording`."""

from __future__ import annotations

from typing import Any

import torch

from service.learning.control import BestVersion
from service.learning.evaluation import Metrics
from service.learning.head import HeadState, TrainingHead
from service.learning.recording import Pointers, Recording
from service.learning.resident import ResidentVersions
from service.learning.served import ServedModel


class Versions:
    def __init__(
        self, *, served: ServedModel, best: BestVersion, head_version: int,
        recorder: Recording, compiled: bool,
    ) -> None:  # fmt: skip
        self.served = served
        self.best = best
        self.head_version = head_version
        self._recorder = recorder
        self._compiled = compiled  # served versions run through torch.compile
        self._resident = ResidentVersions(best.version, best.state)

    def serving(self, head: TrainingHead, version: int, state: HeadState) -> ServedModel:
        """A served model for `version`'s weights (not yet served: `promote` or `reset_to`)."""
        return ServedModel.from_state(
            head.spec, version, state.network, head.device, compiled=self._compiled
        )

    def improved(
        self, head: TrainingHead, *, score: float, metrics: Metrics, reason: str, serve: bool,
        control: dict[str, Any],
    ) -> None:  # fmt: skip
        """The head is the best so far: a version, the best pointer, maybe the served one."""
        state = head.state()  # one copy: the version's contents and the best state alike
        number = self._recorder.checkpoint(
            head, reason=reason, metrics=metrics, parent=self.head_version,
            pointers=Pointers(control, serve=serve, best=True), state=state,
        )  # fmt: skip
        self.head_version = number
        self.best = BestVersion(number, state, score)
        self._resident.keep(number, self.best.state, best=number)
        if serve:
            self.served = self.serving(head, number, self.best.state)

    def checkpoint(
        self, head: TrainingHead, *, reason: str, metrics: Metrics, control: dict[str, Any]
    ) -> int:
        state = head.state()
        number = self._recorder.checkpoint(
            head, reason=reason, metrics=metrics, parent=self.head_version,
            pointers=Pointers(control), state=state,
        )  # fmt: skip
        self.head_version = number
        self._resident.keep(number, state, best=self.best.version)
        return number

    def head_to_best(self, head: TrainingHead) -> None:
        """The head goes back to the best version (weights and optimizer state), from memory;
        its counters carry on."""
        head.load_state(self.best.state, counters=False)
        self.head_version = self.best.version

    def roll_back(self, head: TrainingHead, data: dict[str, Any], control: dict[str, Any]) -> None:
        """A round found the head worse than the best version: the head goes back to it."""
        self.head_to_best(head)
        best = self.best.version
        self._recorder.move("rollback", best, Pointers(control, head=best), data)

    def reset_to(
        self, head: TrainingHead, served: ServedModel, state: HeadState, *, score: float | None,
        control: dict[str, Any],
    ) -> None:  # fmt: skip
        """Manual rollback: serve `served`'s version and restart the head from it."""
        version = served.version
        data = {"from_version": self.served.version, "head_version": self.head_version}
        pointers = Pointers(control, serve=True, best=True, head=version)
        self._recorder.move("rollback", version, pointers, data)
        head.load_state(state, counters=False)
        self.head_version = version
        self.best = BestVersion(version, state, score)
        self.served = served

    def promote(self, served: ServedModel, control: dict[str, Any]) -> None:
        pointers = Pointers(control, serve=True)
        self._recorder.move("promote", served.version, pointers, {"reason": "manual"})
        self.served = served

    def resident_state(self, version: int) -> HeadState | None:
        """A version's state from device memory, or None when only its file has it."""
        return self.best.state if version == self.best.version else self._resident.get(version)

    def best_network(self, head: TrainingHead) -> torch.nn.Module:
        if self.served.version == self.best.version:
            return self.served.network
        return ServedModel.from_state(
            head.spec, self.best.version, self.best.state.network, head.device
        ).network

    def forget_best_score(self) -> None:
        """A new world: the best version stays, its score is no yardstick any more."""
        self.best = self.best.forgotten()

    def prune(self, keep: int) -> None:
        protected = {self.served.version, self.best.version, self.head_version}
        self._recorder.prune(keep=keep, protected=protected)
