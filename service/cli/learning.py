"""`gradual fit` and `gradual predict`: a data file streamed into a model, and a model's
predictions for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from service.cli.errors import DataFileError
from service.cli.remote import DEFAULT_URL, Token, Url, connect


def fit(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    target: Annotated[str, typer.Option(help="The target column (CSV, Parquet).")] = "target",
    batch_size: int = 256,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Stream a CSV, NDJSON or Parquet file into a model, with a progress bar.

    Batch ids are the file's name and offset, so running it again never trains twice; the
    last line counts the batches trained, already applied (duplicate) and refused."""
    from service.cli.fit import fit_file

    with connect(url, token) as client:
        tally = fit_file(client, name, file, batch_size=batch_size, target=target)
        model = client.get(name)
    typer.echo(
        f"{tally.summary()}; step {model.step}, {model.state}, serving v{model.served_version}"
    )


def predict(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    version: int | None = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Predict every row of a CSV, NDJSON or Parquet file (no target column); one per line."""
    with connect(url, token) as client:
        for x in _unlabelled_batches(file):
            for label in client.predict(name, x, version=version).tolist():
                typer.echo(label)


def _unlabelled_batches(path: Path) -> Iterator[object]:
    from service.cli import datafiles

    try:
        for x, _ in datafiles.batches(path, size=1024, target=None):
            yield x
    except (ValueError, KeyError, IndexError) as exc:
        raise DataFileError(f"{path.name}: {exc}") from exc
