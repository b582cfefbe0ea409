"""The `gradual` command line against a real server: create, fit a file, predict, versions."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.config import Settings
from tests.live_server import serving

runner = CliRunner()


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    with serving(settings) as base:
        yield base


def gradual(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    return (rng.normal(size=(n, 4)) + 3 * y[:, None]).astype(np.float32), y


def write_csv(path: Path, x: np.ndarray, y: np.ndarray | None) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [f"f{i}" for i in range(x.shape[1])] + (["target"] if y is not None else [])
        )
        for i, row in enumerate(x.tolist()):
            writer.writerow(row + ([int(y[i])] if y is not None else []))
    return path


def test_create_fit_csv_predict_and_list(url: str, tmp_path: Path) -> None:
    x, y = blobs(600)
    created = gradual("create", "cli", "--task", "classification", "--inputs", "4",
                      "--outputs", "3", "--hidden", "16", "--lr", "0.01", "--url", url)  # fmt: skip
    assert "created cli" in created
    for _ in range(3):
        gradual("fit", "cli", str(write_csv(tmp_path / f"train{_}.csv", x, y)), "--url", url)
    out = gradual(
        "predict", "cli", str(write_csv(tmp_path / "test.csv", x[:50], None)), "--url", url
    )
    labels = [int(line) for line in out.split()]
    assert len(labels) == 50
    assert np.mean(np.asarray(labels) == y[:50]) >= 0.8  # chance is 1/3
    listing = gradual("models", "--url", url)
    assert "cli" in listing
    assert "classification" in listing


def test_fitting_the_same_file_twice_trains_once(url: str, tmp_path: Path) -> None:
    x, y = blobs(300)
    gradual("create", "twice", "--task", "classification", "--inputs", "4", "--outputs", "3",
            "--url", url)  # fmt: skip
    path = write_csv(tmp_path / "data.csv", x, y)
    first = gradual("fit", "twice", str(path), "--batch-size", "100", "--url", url)
    again = gradual("fit", "twice", str(path), "--batch-size", "100", "--url", url)
    step = first.split("step ")[1].split(",")[0]
    assert again.split("step ")[1].split(",")[0] == step  # batch ids: file name and offset


def test_ndjson_rows_and_versions_rollback_promote(url: str, tmp_path: Path) -> None:
    x, y = blobs(200)
    gradual("create", "nd", "--task", "classification", "--inputs", "4", "--outputs", "3",
            "--url", url)  # fmt: skip
    path = tmp_path / "rows.ndjson"
    lines = [
        orjson.dumps({"features": r, "target": int(t)}) for r, t in zip(x.tolist(), y, strict=True)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    gradual("fit", "nd", str(path), "--url", url)
    listing = gradual("versions", "nd", "--url", url)
    assert "init" in listing
    assert "rollback" not in listing
    assert "serving v1" in gradual("rollback", "nd", "1", "--url", url)
    assert "serving v1" in gradual("promote", "nd", "1", "--url", url)


def test_a_file_without_the_target_column_is_refused(url: str, tmp_path: Path) -> None:
    x, _ = blobs(10)
    gradual("create", "nt", "--task", "classification", "--inputs", "4", "--outputs", "3",
            "--url", url)  # fmt: skip
    result = runner.invoke(
        app, ["fit", "nt", str(write_csv(tmp_path / "x.csv", x, None)), "--url", url]
    )
    assert result.exit_code != 0
