"""The online learner: test-then-train on a stream, guarded by a validation buffer.

Per batch: score it with the head before training (prequential metrics), hold out a seeded
fraction of its rows for validation, train on the rest (one transactional `fit`). Every
`eval_every` optimizer steps a round scores the head on the buffer: an improvement becomes
a version (and maybe the served one), a degradation sends the head back to the best version,
and the early stopper may stop training. While stopped, rows go to the buffer and each round
watches the served version for drift, resuming training when the world has moved.

All methods run on the model's writer thread; `served` is only ever replaced, never modified.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from models.losses import target_dtype
from models.spec import OptimizerSpec
from service.learning.buffer import ValidationBuffer
from service.learning.early_stopping import EarlyStopper, StopperState, better
from service.learning.evaluation import Metrics, evaluate, metrics_of
from service.learning.head import HeadState, TrainingHead
from service.learning.holdout import holdout_mask
from service.learning.race.candidates import Candidate, Race
from service.learning.race.rounds import race_round, train_followers
from service.learning.replay import ReplayBuffer
from service.learning.rules import drifted, rollback_reason
from service.learning.schedule import Plateau, after_round, learning_rate
from service.learning.served import ServedModel
from service.learning.trainer import Limits, fit
from service.learning.training_config import TrainingConfig
from service.runtime.recorder import ModelRecorder
from service.storage.registry import Pointers

State = Literal["training", "stopped"]
RESIDENT_VERSIONS = 4  # the latest versions' states kept in device memory: rollback reads no file


@dataclass(frozen=True)
class BestVersion:
    """The best version so far, resident in device memory so a rollback reads no file."""

    version: int
    state: HeadState
    score: float | None


@dataclass
class Control:
    """The learner's plain-data state, stored on the model row at every transition."""

    state: State = "training"
    stopping_reason: str | None = None
    stopper: StopperState = field(default_factory=StopperState)
    rows_seen: int = 0  # every accepted row, held out or not
    served_score_at_stop: float | None = None
    last_round_step: int = 0
    idle_steps: int = 0  # mini-batch-sized chunks received while stopped
    step: int = 0
    samples_seen: int = 0
    plateau: Plateau = field(default_factory=Plateau)  # reduce_on_plateau's state

    def to_dict(self) -> dict[str, Any]:
        data = self.__dict__ | {"stopper": self.stopper.to_dict(), "plateau": asdict(self.plateau)}
        return dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Control:
        if not data:
            return cls()
        plateau = Plateau(**data.get("plateau", {}))
        return cls(
            **(data | {"stopper": StopperState.from_dict(data["stopper"]), "plateau": plateau})
        )


@dataclass(frozen=True)
class LearnReport:
    trained: int
    steps: int
    train_loss: float | None
    prequential: Metrics
    state: State


class OnlineLearner:
    def __init__(
        self, *, head: TrainingHead, served: ServedModel, best: BestVersion, head_version: int,
        training: TrainingConfig, optimizer: OptimizerSpec, seed: int, limits: Limits,
        recorder: ModelRecorder, control: Control, race: Race | None = None,
    ) -> None:  # fmt: skip
        self.race = race  # candidates racing beside the head (the leader's), if any
        self.head = head
        self.served = served
        self.best = best
        self.head_version = head_version
        self.optimizer = optimizer
        self.seed = seed
        self.limits = limits
        self.recorder = recorder
        self.control = control
        self.training = training
        self.stopper = EarlyStopper(training.stopper(), control.stopper)
        self.buffer = self._new_buffer(training.buffer_size)
        self.replay = self._new_replay(training.replay)
        self.round_losses: list[tuple[float, int]] = []  # (mean loss, rows) since the last round
        self.resident: dict[int, HeadState] = {best.version: best.state}  # oldest first

    @property
    def spec(self) -> Any:
        return self.head.spec

    # -- the stream -----------------------------------------------------------------------

    def learn(
        self, x: torch.Tensor, y: torch.Tensor, x_rows: np.ndarray, y_rows: np.ndarray
    ) -> LearnReport:
        """`x_rows`/`y_rows` are the same rows on the host, for the holdout hash."""
        if self.control.state == "stopped":
            prequential = evaluate(self.head.network, self.spec, x, y)
            self._accept(x, y, held_out=None)
            self._watch_while_stopped(x.shape[0])
            return LearnReport(0, 0, None, prequential, self.control.state)  # drift may resume
        mask = holdout_mask(self.seed, x_rows, y_rows, self.training.holdout)
        in_step = self._scored_by_first_step(mask)
        prequential = {} if in_step else evaluate(self.head.network, self.spec, x, y)
        train = torch.from_numpy(~mask).to(x.device)
        steps, trained, loss = 0, 0, None
        if bool(train.any()):
            x_train, y_train = x[train], y[train]
            result = fit(
                self.head, x_train, y_train, training=self.fit_training, optimizer=self.optimizer,
                limits=self.limits, replay=self.replay, lr=self.lr_at,
                keep_outputs=x.shape[0] if in_step else 0,
            )  # fmt: skip
            steps, trained, loss = result.steps, result.trained, result.train_loss
            if result.first_outputs is not None:
                prequential = metrics_of(self.spec, result.first_outputs, y)
            self.round_losses.append((loss, trained))
            if self.race is not None:
                train_followers(self, self.race, x_train, y_train)
            self.replay.add(x_train, y_train)
        self._accept(x, y, held_out=mask)
        if self._round_due() and (metrics := self._round()) is not None and self.race is not None:
            race_round(self, self.race, metrics)
        return LearnReport(trained, steps, loss, prequential, self.control.state)

    def _scored_by_first_step(self, held_out: np.ndarray) -> bool:
        """Whether the first training step's forward pass is the prequential score: it runs on
        the head before any step, and here nothing makes it differ from `evaluate`'s pass (no
        held-out row, one mini-batch, no dropout, normalizer, noise, autocast or compiled
        step, whose rounding may differ), so the batch is scored without a pass of its own."""
        return (
            not held_out.any()
            and held_out.shape[0] <= self.training.batch_size
            and self.head.network.normalizer is None
            and self.spec.dropout == 0.0
            and self.training.augment_noise == 0.0
            and self.limits.autocast is None
            and not self.limits.compile_training
        )

    def add_validation(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.buffer.add(x, y)

    def _accept(self, x: torch.Tensor, y: torch.Tensor, *, held_out: np.ndarray | None) -> None:
        if held_out is None:
            self.buffer.add(x, y)
        elif held_out.any():
            keep = torch.from_numpy(held_out).to(x.device)
            self.buffer.add(x[keep], y[keep])
        self.control.rows_seen += x.shape[0]

    def _round_due(self) -> bool:
        every = self.training.eval_every
        return self.head.step // every > self.control.last_round_step // every

    # -- rounds ---------------------------------------------------------------------------

    @property
    def fit_training(self) -> TrainingConfig:
        """The training section the head's steps follow (a race leader's own batch size)."""
        if self.race is None:
            return self.training
        return self.training.model_copy(update={"batch_size": self.race.leader.plan.batch_size})

    def _round(self) -> Metrics | None:
        """Scores the head on the buffer and acts on it; returns the scores, if any."""
        self.control.last_round_step = self.head.step
        if self.buffer.size == 0:
            return None
        metrics = evaluate(self.head.network, self.spec, *self.buffer.tensors())
        score = metrics[self.training.metric]
        self.recorder.event("round", self.head_version, self._round_record(metrics))
        self._schedule_after_round(score)
        decision = self.stopper.update(score, self.head.step)
        if not decision.monitored:
            return metrics
        if decision.improved:
            self._checkpoint_best(score, metrics)
        elif reason := rollback_reason(
            score, self.best.score, self.training.resolved_mode, self.training.rollback_tolerance
        ):
            self._roll_back(reason, score)
        if decision.stop is not None:
            self._stop(decision.stop, score)
        return metrics

    def _round_record(self, metrics: Metrics) -> dict[str, Any]:
        rows = sum(n for _, n in self.round_losses)
        loss = sum(v * n for v, n in self.round_losses) / rows if rows else None
        self.round_losses.clear()
        return {
            "step": self.head.step, "samples_seen": self.head.samples_seen, "train_loss": loss,
            "lr": self.lr_at(max(self.head.step - 1, 0)),  # the rate of the round's last step
            **{f"val_{k}": _finite_or_none(v) for k, v in metrics.items()},
        }  # fmt: skip

    def _schedule_after_round(self, score: float) -> None:
        before = self.lr
        self.control.plateau = after_round(
            self.training.schedule(), self.optimizer.lr, self.control.plateau, score,
            self.training.resolved_mode,
        )  # fmt: skip
        if self.lr < before:
            data = {
                "step": self.head.step, "from_lr": before, "lr": self.lr,
                "score": _finite_or_none(score),
            }  # fmt: skip
            self.recorder.event("lr_reduced", self.head_version, data)

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step takes."""
        return self.lr_at(self.head.step)

    def lr_at(self, step: int) -> float:
        return learning_rate(
            self.training.schedule(), self.optimizer.lr, step=step, plateau=self.control.plateau
        )

    def _checkpoint_best(self, score: float, metrics: Metrics, reason: str = "improved") -> None:
        val = {f"val_{k}": v for k, v in metrics.items()}
        serve = self._should_promote(score)
        number = self.recorder.checkpoint(
            self.head, reason=reason, metrics=val, parent=self.head_version,
            pointers=Pointers(self.control_state(), serve=serve, best=True),
        )  # fmt: skip
        self.head_version = number
        self.best = BestVersion(number, self.head.state(), score)
        self._keep_resident(number, self.best.state)
        if serve:
            self.served = ServedModel.from_state(
                self.spec, number, self.best.state.network, self.head.device,
                compiled=self.limits.compile_predict,
            )  # fmt: skip
        self._prune()

    def _should_promote(self, score: float) -> bool:
        if self.training.promote == "latest":
            return True
        if self.training.promote == "manual":
            return False
        served_score = self.score_served()
        return served_score is None or better(score, served_score, self.training.resolved_mode)

    def _roll_back(self, reason: str, score: float) -> None:
        """The head goes back to the best version (weights and optimizer state), from memory."""
        self.head.load_state(self.best.state, counters=False)
        self.head_version = self.best.version
        data = {"reason": reason, "score": _finite_or_none(score), "best": self.best.score}
        self.recorder.move(
            "rollback",
            self.best.version,
            Pointers(self.control_state(), head=self.best.version),
            data,
        )

    def _stop(self, reason: str, score: float) -> None:
        if self.training.restore_best:
            # Always: `head_version` is the version the head started from, so it still names
            # the best version after the head has trained past it.
            self.head.load_state(self.best.state, counters=False)
            self.head_version = self.best.version
        self.control.state, self.control.stopping_reason = "stopped", reason
        self.control.served_score_at_stop = self.score_served()
        data = {
            "reason": reason, "score": _finite_or_none(score), "best": self.best.score,
            "served_score": self.control.served_score_at_stop,
        }  # fmt: skip
        self.recorder.move(
            "early_stop",
            self.best.version,
            Pointers(self.control_state(), head=self.head_version),
            data,
        )

    # -- while stopped --------------------------------------------------------------------

    def _watch_while_stopped(self, rows: int) -> None:
        before = self.control.idle_steps
        self.control.idle_steps += math.ceil(rows / self.training.batch_size)
        every = self.training.eval_every
        if self.control.idle_steps // every == before // every:
            return
        score = self.score_served()
        if score is None or self.control.stopping_reason == "manual":
            return
        at_stop = self.control.served_score_at_stop
        mode, tolerance = self.training.resolved_mode, self.training.drift_tolerance
        if not drifted(score, at_stop, mode, tolerance):
            return
        data = {"score": _finite_or_none(score), "at_stop": at_stop}
        self.recorder.event("drift", self.served.version, data)
        if self.training.resume_on_drift:
            self.resume("drift")

    def resume(self, reason: str) -> None:
        if reason == "drift":
            # A new world: scores from the old one are no yardstick for improvement or rollback.
            self._forget_scores()
            if self.race is not None and (back := self.race.reopen(self.head.device)):
                data = {"step": self.head.step, "reopened": [c.index for c in back]}
                self.recorder.event("race_reopened", self.head_version, data)
        else:
            self.stopper.state.wait = 0
        self.control.state, self.control.stopping_reason = "training", None
        self.control.served_score_at_stop = None
        self.control.last_round_step = self.head.step
        self.recorder.move("resume", None, Pointers(self.control_state()), {"reason": reason})

    def switch_leader(self, candidate: Candidate) -> None:
        """Hands the head to a better candidate: its weights become a version at once, served
        if it beats the served version on the buffer (the usual gate); the yardstick for
        improvement and rollback is its own score from now on."""
        assert self.race is not None
        assert candidate.head is not None
        self.race.leader_index = candidate.index
        self.head, self.optimizer = candidate.head, candidate.plan.optimizer
        metrics = evaluate(self.head.network, self.spec, *self.buffer.tensors())
        score = metrics[self.training.metric]
        self.stopper.state.best, self.stopper.state.wait = score, 0
        self._checkpoint_best(score, metrics, reason="race_leader")

    def _forget_scores(self) -> None:
        self.stopper.reset()
        self.control.stopper = self.stopper.state
        self.control.plateau = Plateau()  # the rate starts over too
        self.best = BestVersion(self.best.version, self.best.state, None)

    def stop(self) -> None:
        self.control.state, self.control.stopping_reason = "stopped", "manual"
        self.control.served_score_at_stop = self.score_served()
        self.recorder.move("stop", None, Pointers(self.control_state()), {"reason": "manual"})

    # -- by hand --------------------------------------------------------------------------

    def checkpoint(self, reason: str = "manual") -> int:
        number = self.recorder.checkpoint(
            self.head, reason=reason, metrics=self.validation_metrics(self.head.network),
            parent=self.head_version, pointers=Pointers(self.control_state()),
        )  # fmt: skip
        self.head_version = number
        self._keep_resident(number, self.head.state())
        self._prune()
        return number

    def _keep_resident(self, version: int, state: HeadState) -> None:
        self.resident[version] = state
        for old in list(self.resident)[:-RESIDENT_VERSIONS]:
            if old != self.best.version:  # the best stays: rounds roll back to it
                del self.resident[old]

    def resident_state(self, version: int) -> HeadState | None:
        """A version's state from device memory, or None when only its file has it."""
        return self.best.state if version == self.best.version else self.resident.get(version)

    def reset_to(self, version: int, state: HeadState) -> None:
        """Manual rollback: serve `version` and restart the head from it."""
        served = ServedModel.from_state(
            self.spec, version, state.network, self.head.device,
            compiled=self.limits.compile_predict,
        )  # fmt: skip
        score = self._score(served.network)
        data = {"from_version": self.served.version, "head_version": self.head_version}
        self.stopper.state.best, self.stopper.state.wait = score, 0
        self.recorder.move(
            "rollback",
            version,
            Pointers(self.control_state(), serve=True, best=True, head=version),
            data,
        )
        self.head.load_state(state, counters=False)
        self.head_version = version
        self.best = BestVersion(version, state, score)
        self.served = served

    def promote(self, version: int, served: ServedModel) -> None:
        self.recorder.move(
            "promote", version, Pointers(self.control_state(), serve=True), {"reason": "manual"}
        )
        self.served = served

    def reconfigure(self, training: TrainingConfig) -> None:
        if training.buffer_size != self.training.buffer_size:
            old = self.buffer.oldest_first()
            self.buffer = self._new_buffer(training.buffer_size)
            self.buffer.add(*old)
        if training.replay != self.training.replay:
            self.replay = self.replay.resized(training.replay)
        yardstick = (training.monitor, training.resolved_mode)
        changed = yardstick != (self.training.monitor, self.training.resolved_mode)
        self.training = training
        self.stopper.config = training.stopper()
        if changed:  # a loss is no yardstick for an accuracy, nor a minimum for a maximum
            self._forget_scores()
            if self.control.state == "stopped":
                self.control.served_score_at_stop = self.score_served()

    # -- scores ---------------------------------------------------------------------------

    def validation_metrics(self, network: torch.nn.Module) -> Metrics:
        if self.buffer.size == 0:
            return {}
        metrics = evaluate(network, self.spec, *self.buffer.tensors())
        return {f"val_{k}": v for k, v in metrics.items()}

    def score_served(self) -> float | None:
        return self._score(self.served.network)

    def _score(self, network: torch.nn.Module) -> float | None:
        if self.buffer.size == 0:
            return None
        return evaluate(network, self.spec, *self.buffer.tensors())[self.training.metric]

    def control_state(self) -> dict[str, Any]:
        self.control.step, self.control.samples_seen = self.head.step, self.head.samples_seen
        return self.control.to_dict()

    def _prune(self) -> None:
        protected = {self.served.version, self.best.version, self.head_version}
        self.recorder.prune(keep=self.training.keep_versions, protected=protected)

    def _new_buffer(self, capacity: int) -> ValidationBuffer:
        spec = self.spec
        shape: tuple[int, ...] = () if spec.task == "classification" else (spec.outputs,)
        return ValidationBuffer(capacity, spec.inputs, shape, target_dtype(spec), self.head.device)

    def _new_replay(self, capacity: int) -> ReplayBuffer:
        spec = self.spec
        shape: tuple[int, ...] = () if spec.task == "classification" else (spec.outputs,)
        return ReplayBuffer(
            capacity, spec.inputs, shape, target_dtype(spec), self.head.device, seed=self.seed
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
