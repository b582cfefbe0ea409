"""`gradual fit`: a data file streamed into a model, batch by batch, with a progress bar that
shows the file's row count when it can be known, and a tally of what the service did with each
batch (trained, already applied, refused)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.cli import datafiles
from service.cli.errors import DataFileError
from service.client import GradualClient, GradualClientError

REFUSED_CODES = frozenset({"batch_rejected"})  # the step was refused; the next batch may not be


@dataclass
class FitTally:
    """Rows and batches sent, and per batch what the service did."""

    rows: int = 0
    batches: int = 0
    trained: int = 0
    duplicate: int = 0
    refused: int = 0

    def summary(self) -> str:
        return (
            f"{self.rows} rows in {self.batches} batches: {self.trained} trained, "
            f"{self.duplicate} duplicate, {self.refused} refused"
        )


def fit_file(
    client: GradualClient, name: str, path: Path, *, batch_size: int, target: str
) -> FitTally:
    """Sends every batch of `path` (ids: file name and batch number, so a re-run trains
    nothing twice); a refused batch is counted and the stream goes on."""
    tally = FitTally()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    with progress:
        task = progress.add_task(f"fitting {name}", total=_total(path))
        for index, (x, y) in enumerate(labelled_batches(path, batch_size, target)):
            _send(client, name, x, y, f"{path.name}:{index}", tally)
            progress.update(task, completed=tally.rows)
    return tally


def _send(
    client: GradualClient, name: str, x: np.ndarray, y: np.ndarray, batch_id: str,
    tally: FitTally,
) -> None:  # fmt: skip
    try:
        result = client.partial_fit(name, x, y, batch_id=batch_id)
    except GradualClientError as error:
        if error.code not in REFUSED_CODES:
            raise
        tally.refused += 1
    else:
        if result.duplicate:
            tally.duplicate += 1
        else:
            tally.trained += 1
    tally.batches += 1
    tally.rows += len(x)


def labelled_batches(
    path: Path, batch_size: int, target: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The file's (inputs, targets) batches; a file that cannot be read is a `DataFileError`."""
    try:
        for x, y in datafiles.batches(path, size=batch_size, target=target):
            if y is None:
                raise DataFileError(f"{path.name} has no target column {target!r}")
            yield x, y
    except (ValueError, KeyError, IndexError) as exc:
        raise DataFileError(f"{path.name}: {exc}") from exc


def _total(path: Path) -> int | None:
    try:
        return datafiles.count_rows(path)
    except (ValueError, OSError):
        return None
