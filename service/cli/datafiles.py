"""Labelled and unlabelled rows from files, in batches: CSV, NDJSON or Parquet.

CSV and Parquet: every column is a feature, except the target column (`target`, or the one
named) when training. NDJSON: one object per line, either a batch (`{"inputs": [[...]],
"targets": [...]}`) or a row (`{"features": [...], "target": ...}`). Files are read in chunks,
never whole.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

Batch = tuple[np.ndarray, np.ndarray | None]


def batches(path: Path, *, size: int, target: str | None) -> Iterator[Batch]:
    """(inputs, targets or None) batches of up to `size` rows."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv(path, size, target)
    elif suffix in {".ndjson", ".jsonl"}:
        yield from _ndjson(path, size)
    elif suffix == ".parquet":
        yield from _parquet(path, size, target)
    else:
        raise ValueError(f"{path.name}: expected .csv, .ndjson/.jsonl or .parquet")


def _csv(path: Path, size: int, target: str | None) -> Iterator[Batch]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = header.index(target) if target is not None else None
        while rows := list(islice(reader, size)):
            table = np.asarray(rows, dtype=np.float64)
            yield _split(table, column)


def _split(table: np.ndarray, column: int | None) -> Batch:
    if column is None:
        return table.astype(np.float32), None
    features = np.delete(table, column, axis=1).astype(np.float32)
    return features, table[:, column]


def _ndjson(path: Path, size: int) -> Iterator[Batch]:
    inputs: list[Any] = []
    targets: list[Any] = []
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            item = orjson.loads(line)
            if "inputs" in item:
                yield np.asarray(item["inputs"], np.float32), _maybe(item.get("targets"))
                continue
            inputs.append(item["features"])
            if "target" in item:
                targets.append(item["target"])
            if len(inputs) == size:
                yield np.asarray(inputs, np.float32), _maybe(targets or None)
                inputs, targets = [], []
    if inputs:
        yield np.asarray(inputs, np.float32), _maybe(targets or None)


def _maybe(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values)


def _parquet(path: Path, size: int, target: str | None) -> Iterator[Batch]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("reading Parquet needs pyarrow: pip install 'gradual[parquet]'") from exc
    for chunk in pq.ParquetFile(path).iter_batches(batch_size=size):
        names = chunk.schema.names
        table = np.column_stack([chunk.column(n).to_numpy() for n in names]).astype(np.float64)
        yield _split(table, names.index(target) if target is not None else None)
