"""Watching a stopped model for drift, on fresh evidence only.

While a model is stopped its rows go to the validation buffer. Every `eval_every`
mini-batch-sized chunks, the served version is scored on the rows that arrived after the stop
(once there are `drift_min_rows` of them), never on the rows that stopped it; a relative drift
must also be significant against the noise measured at the stop."""

from __future__ import annotations

from typing import Any

from torch import nn

from service.learning.control import Control
from service.learning.rules import drifted, finite_or_none, fresh_enough
from service.learning.yardstick import Yardstick


def note_stop(control: Control, yardstick: Yardstick, served: nn.Module) -> None:
    """The served version's score and spread at the stop: what drift is measured against."""
    control.served_at_stop(yardstick.score(served), yardstick.spread(served))


def drift_seen(
    control: Control, yardstick: Yardstick, served: nn.Module, rows: int
) -> dict[str, Any] | None:
    """After `rows` more rows while stopped: the drift event's data, if the world moved."""
    training = yardstick.training
    if not control.idled(rows, training.batch_size, training.eval_every):
        return None
    if control.stopping_reason == "manual":
        return None
    score = fresh_score(control, yardstick, served)
    if score is None:
        return None
    at_stop = control.served_score_at_stop
    if not drifted(score, at_stop, training.resolved_mode, training.drift_tolerance):
        return None
    if not yardstick.drift_is_significant(served, control.fresh_rows, control.spread_at_stop):
        return None
    return {"score": finite_or_none(score), "at_stop": at_stop}


def fresh_score(control: Control, yardstick: Yardstick, served: nn.Module) -> float | None:
    """The served version's score on the rows that arrived since the stop, once there are
    `drift_min_rows` of them (`drift_min_rows` 0: on the whole buffer)."""
    minimum = yardstick.training.drift_min_rows
    if minimum == 0:
        return yardstick.score(served)
    fresh = control.fresh_rows
    if not fresh_enough(fresh, minimum, yardstick.buffer.capacity):
        return None
    return yardstick.score_newest(served, fresh)
