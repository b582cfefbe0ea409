"""What a write adds to the registry: a model, a version, and what pruning did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.storage.weights import StoredFile


@dataclass(frozen=True)
class NewVersion:
    """What a checkpoint adds: counters, metrics and the file already written and fsynced."""

    step: int
    samples_seen: int
    metrics: dict[str, Any]
    reason: str
    parent: int | None
    file: StoredFile
    applied_seq: int | None = None  # the last log record this version's state includes


@dataclass(frozen=True)
class Archived:
    """What pruning did: the files to delete, and how many ready versions the model keeps."""

    paths: list[str]
    ready: int


@dataclass(frozen=True)
class NewModel:
    name: str
    task: str
    spec: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    seed: int
