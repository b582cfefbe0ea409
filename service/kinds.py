"""What the write-ahead log and the event log hold: their kinds as types, so a typo fails mypy.

A record is one change to a model in its log (and in a Redis stream entry); an event is one
row of a model's history. Producers and consumers (the learner, the recorder, the registry,
metrics, the history route, the dashboard) all name kinds through these `Literal`s.
"""

from __future__ import annotations

from typing import Literal, get_args

from service.errors import InvalidInput

# A record: a batch to learn, validation rows, or a control command.
RecordKind = Literal[
    "fit", "validation", "stop", "resume", "training", "checkpoint", "rollback", "promote"
]
RECORD_KINDS: frozenset[RecordKind] = frozenset(get_args(RecordKind))
LABELLED_KINDS: frozenset[RecordKind] = frozenset({"fit", "validation"})

# Events that move the model's pointers (served, best, head) or its training state.
MoveKind = Literal["rollback", "early_stop", "resume", "stop", "promote"]
# Everything else the history holds.
NoteKind = Literal[
    "created", "checkpoint", "round", "lr_reduced", "drift", "training_updated",
    "race_halved", "race_retired", "race_reopened", "batch_failed",
]  # fmt: skip
EventKind = Literal[MoveKind, NoteKind]
EVENT_KINDS: tuple[EventKind, ...] = get_args(MoveKind) + get_args(NoteKind)

# The events a learning curve marks (the dashboard's chart.js MARKERS has the same keys).
MARKER_KINDS: tuple[EventKind, ...] = (
    "checkpoint", "promote", "rollback", "early_stop", "drift", "stop", "resume",
)  # fmt: skip


def record_kind(text: str) -> RecordKind:
    """`text` as a record kind; an unknown one is refused with the field named."""
    if text not in RECORD_KINDS:
        raise InvalidInput(f"unknown record kind {text!r}", field="kind")
    return text
