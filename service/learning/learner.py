"""The online learner: test-then-train on a stream, guarded by a validation buffer.

Per batch: score it with the head before training (prequential metrics), hold out a seeded
fraction of its rows for validation, train on the rest (one transactional `fit`). Every
`eval_every` optimizer steps a round scores the head on the buffer: an improvement becomes
a version (and maybe the served one), a degradation sends the head back to the best version,
and the early stopper may stop training. While stopped, rows go to the buffer and each round
watches the served version for drift, resuming training when the world has moved.

All methods run on the model's writer thread; the served model is replaced, never modified.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.spec import NetworkSpec, OptimizerSpec
from service.learning.buffer import ValidationBuffer, layout_of
from service.learning.control import BestVersion, Control, LearnReport
from service.learning.early_stopping import EarlyStopper
from service.learning.evaluation import Metrics, evaluate, metrics_of
from service.learning.head import HeadState, TrainingHead
from service.learning.holdout import holdout_mask
from service.learning.prequential import scored_by_first_step
from service.learning.race.candidates import Candidate, Race
from service.learning.race.rounds import retire_losers, score_round, train_followers
from service.learning.recording import Pointers, Recording
from service.learning.replay import ReplayBuffer
from service.learning.rounds import lr_reduction, round_record
from service.learning.rules import finite_or_none, promotes
from service.learning.schedule import after_round, learning_rate
from service.learning.served import ServedModel
from service.learning.trainer import Limits, fit
from service.learning.training_config import TrainingConfig
from service.learning.versions import Versions
from service.learning.watch import drift_seen, note_stop
from service.learning.yardstick import Yardstick


class OnlineLearner:
    """One model's learning: test-then-train on each batch, rounds on the validation buffer,
    and the decisions they lead to (checkpoint, rollback, early stop, drift, race), each made
    durable through a `Recording`. Used by the model's writer thread only; `versions` holds
    and moves the version pointers, `control` the plain-data state."""

    def __init__(
        self, *, head: TrainingHead, served: ServedModel, best: BestVersion, head_version: int,
        training: TrainingConfig, optimizer: OptimizerSpec, seed: int, limits: Limits,
        recorder: Recording, control: Control, race: Race | None = None,
    ) -> None:  # fmt: skip
        self.race = race  # candidates racing beside the head (the leader's), if any
        self.head = head
        self.optimizer = optimizer
        self.seed = seed
        self.limits = limits
        self.recorder = recorder
        self.control = control
        self.training = training
        self.versions = Versions(
            served=served, best=best, head_version=head_version, recorder=recorder,
            compiled=limits.compile_predict,
        )  # fmt: skip
        self.stopper = EarlyStopper(training.stopper(), control.stopper)
        self.buffer = ValidationBuffer(training.buffer_size, *layout_of(head.spec), head.device)
        self.replay = ReplayBuffer(training.replay, *layout_of(head.spec), head.device, seed=seed)
        self.round_losses: list[tuple[float, int]] = []  # (mean loss, rows) since the last round

    @property
    def spec(self) -> NetworkSpec:
        return self.head.spec

    @property
    def yardstick(self) -> Yardstick:
        return Yardstick(self.spec, self.training, self.buffer)

    def learn(
        self, x: torch.Tensor, y: torch.Tensor, x_rows: np.ndarray, y_rows: np.ndarray
    ) -> LearnReport:
        """`x_rows`/`y_rows` are the same rows on the host, for the holdout hash."""
        if self.control.state == "stopped":
            prequential = evaluate(self.head.network, self.spec, x, y)
            self.add_validation(x, y)
            self.control.accepted(x.shape[0])
            served = self.versions.served
            if drift := drift_seen(self.control, self.yardstick, served.network, x.shape[0]):
                self.recorder.event("drift", served.version, drift)
                if self.training.resume_on_drift:
                    self.resume("drift")
            return LearnReport(0, 0, None, prequential, self.control.state)
        mask = holdout_mask(self.seed, x_rows, y_rows, self.training.holdout)
        in_step = scored_by_first_step(mask, self.training, self.limits, self.head)
        prequential = {} if in_step else evaluate(self.head.network, self.spec, x, y)
        train = torch.from_numpy(~mask).to(x.device)
        steps, trained, loss = 0, 0, None
        if bool(train.any()):
            x_train, y_train = x[train], y[train]
            training = self.training if self.race is None else self.race.follows(self.training)
            result = fit(
                self.head, x_train, y_train, training=training, optimizer=self.optimizer,
                limits=self.limits, replay=self.replay, lr=self.lr_at,
                keep_outputs=x.shape[0] if in_step else 0,
            )  # fmt: skip
            steps, trained, loss = result.steps, result.trained, result.train_loss
            if result.first_outputs is not None:
                prequential = metrics_of(self.spec, result.first_outputs, y)
            self.round_losses.append((loss, trained))
            if self.race is not None:
                self._train_followers(self.race, x_train, y_train)
            self.replay.add(x_train, y_train)
        if mask.any():
            keep = torch.from_numpy(mask).to(x.device)
            self.buffer.add(x[keep], y[keep])
        self.control.accepted(x.shape[0])
        if self.control.round_due(self.head.step, self.training.eval_every):
            metrics = self._round()
            if metrics is not None and self.race is not None:
                self._race_round(self.race, metrics)
        return LearnReport(trained, steps, loss, prequential, self.control.state)

    def add_validation(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.buffer.add(x, y)
        if self.control.state == "stopped":
            self.control.accepted(0, buffered=x.shape[0])

    # -- rounds ---------------------------------------------------------------------------

    def _round(self) -> Metrics | None:
        """Scores the head on the buffer and acts on it; returns the scores, if any."""
        self.control.round_ran(self.head.step)
        if self.buffer.size == 0:
            return None
        metrics, outputs = self.yardstick.scored(self.head.network)
        score = metrics[self.training.metric]
        head_version = self.versions.head_version
        record = round_record(self.head, metrics, self.round_losses, self.lr_at)
        self.recorder.event("round", head_version, record)
        before = self.lr_at(self.head.step)
        self.control.rescheduled(
            after_round(
                self.training.schedule(), self.optimizer.lr, self.control.plateau, score,
                self.training.resolved_mode,
            )
        )  # fmt: skip
        if reduced := lr_reduction(self.head.step, before, self.lr_at(self.head.step), score):
            self.recorder.event("lr_reduced", head_version, reduced)
        decision = self.stopper.update(score, self.head.step)
        if not decision.monitored:
            return metrics
        versions = self.versions
        if decision.improved:
            self._checkpoint_best(score, metrics)
        elif reason := self.yardstick.rollback_reason(
            score, versions.best.score, outputs, lambda: versions.best_network(self.head)
        ):
            data = {"reason": reason, "score": finite_or_none(score), "best": versions.best.score}
            versions.roll_back(self.head, data, self.control_state())
        if decision.stop is not None:
            self._stop(decision.stop, score)
        return metrics

    def lr_at(self, step: int) -> float:
        """The learning rate optimizer step `step` takes."""
        return learning_rate(
            self.training.schedule(), self.optimizer.lr, step=step, plateau=self.control.plateau
        )

    def _checkpoint_best(self, score: float, metrics: Metrics, reason: str = "improved") -> None:
        serve = promotes(
            self.training.promote, score,
            lambda: self.yardstick.score(self.versions.served.network), self.training.resolved_mode,
        )  # fmt: skip
        self.versions.improved(
            self.head, score=score, metrics={f"val_{k}": v for k, v in metrics.items()},
            reason=reason, serve=serve,
            control=self.control_state(),
        )  # fmt: skip
        self.versions.prune(self.training.keep_versions)

    def _stop(self, reason: str, score: float) -> None:
        if self.training.restore_best:
            # Always: `head_version` is the version the head started from, so it still names
            # the best version after the head has trained past it.
            self.versions.head_to_best(self.head)
        self.control.stopped(reason)
        note_stop(self.control, self.yardstick, self.versions.served.network)
        data = {
            "reason": reason, "score": finite_or_none(score), "best": self.versions.best.score,
            "served_score": self.control.served_score_at_stop,
        }  # fmt: skip
        pointers = Pointers(self.control_state(), head=self.versions.head_version)
        self.recorder.move("early_stop", self.versions.best.version, pointers, data)

    # -- races ----------------------------------------------------------------------------

    def _train_followers(self, race: Race, x: torch.Tensor, y: torch.Tensor) -> None:
        refused = train_followers(
            race, x, y, replay=self.replay, training=self.training,
            plateau=self.control.plateau, limits=self.limits, step=self.head.step,
        )  # fmt: skip
        if refused:
            data = {"step": self.head.step, "retired": refused}
            self.recorder.event("race_retired", self.versions.head_version, data)

    def _race_round(self, race: Race, leader: Metrics) -> None:
        x, y = self.buffer.tensors()
        halving = score_round(
            race, leader, lambda net, spec: evaluate(net, spec, x, y), step=self.head.step,
            training=self.training,
        )  # fmt: skip
        if halving is None:
            return
        if halving.leader.index != race.leader_index:
            self.switch_leader(halving.leader)
        data = retire_losers(race, halving, step=self.head.step, metric=self.training.metric)
        self.recorder.event("race_halved", self.versions.head_version, data)

    def switch_leader(self, candidate: Candidate) -> None:
        """Hands the head to a better candidate: its weights become a version at once, served
        if it beats the served version on the buffer (the usual gate); the yardstick for
        improvement and rollback is its own score from now on. The head's counters carry on
        from the model's, so steps, samples and rounds never go back."""
        assert self.race is not None
        assert candidate.head is not None
        # The model's counters stay the model's: how much of the stream has gone by does not
        # depend on who leads (a candidate reopened after a drift counts from zero).
        candidate.head.carry_counters(self.head)
        self.race.lead(candidate)
        self.head, self.optimizer = candidate.head, candidate.plan.optimizer
        metrics = self.yardstick.metrics(self.head.network)
        score = metrics[self.training.metric]
        self.stopper.restart_from(score)
        self._checkpoint_best(score, metrics, reason="race_leader")

    # -- stop and resume ------------------------------------------------------------------

    def resume(self, reason: str) -> None:
        if reason == "drift":
            # A new world: scores from the old one are no yardstick for improvement or rollback.
            self._forget_scores()
            if self.race is not None and (back := self.race.reopen(self.head.device)):
                data = {"step": self.head.step, "reopened": [c.index for c in back]}
                self.recorder.event("race_reopened", self.versions.head_version, data)
        else:
            self.stopper.patience_restored()
        self.control.resumed(self.head.step)
        self.recorder.move("resume", None, Pointers(self.control_state()), {"reason": reason})

    def _forget_scores(self) -> None:
        self.stopper.reset()
        self.control.scores_forgotten(self.stopper.state)
        self.versions.forget_best_score()

    def stop(self) -> None:
        self.control.stopped("manual")
        note_stop(self.control, self.yardstick, self.versions.served.network)
        self.recorder.move("stop", None, Pointers(self.control_state()), {"reason": "manual"})

    # -- by hand --------------------------------------------------------------------------

    def checkpoint(self, reason: str = "manual") -> int:
        number = self.versions.checkpoint(
            self.head, reason=reason, metrics=self.yardstick.validation_metrics(self.head.network),
            control=self.control_state(),
        )  # fmt: skip
        self.versions.prune(self.training.keep_versions)
        return number

    def reset_to(self, version: int, state: HeadState) -> None:
        """Manual rollback: serve `version` and restart the head from it."""
        served = self.versions.serving(self.head, version, state)
        score = self.yardstick.score(served.network)
        self.stopper.restart_from(score)
        self.versions.reset_to(self.head, served, state, score=score, control=self.control_state())

    def promote(self, served: ServedModel) -> None:
        self.versions.promote(served, self.control_state())

    def reconfigure(self, training: TrainingConfig) -> None:
        if training.buffer_size != self.training.buffer_size:
            self.buffer = self.buffer.resized(training.buffer_size)
        if training.replay != self.training.replay:
            self.replay = self.replay.resized(training.replay)
        yardstick = (training.monitor, training.resolved_mode)
        changed = yardstick != (self.training.monitor, self.training.resolved_mode)
        self.training = training
        self.stopper.config = training.stopper()
        if changed:  # a loss is no yardstick for an accuracy, nor a minimum for a maximum
            self._forget_scores()
            if self.control.state == "stopped":
                fresh = self.control.fresh_rows
                note_stop(self.control, self.yardstick, self.versions.served.network)
                self.control.accepted(0, buffered=fresh)

    def control_state(self) -> dict[str, Any]:
        """The control state as stored, with the head's counters as of now."""
        return self.control.to_dict(self.head.step, self.head.samples_seen)
