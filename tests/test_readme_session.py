"""The README's "A first session", run as written against a live server.

Each `curl` of the section runs in bash, with `localhost:8000` pointing at the test's server
and each `[...54 numbers...]` row placeholder filled with seeded rows (as many as the comment
before the command says). An answer the README shows (`# → {...}`, `...` eliding the rest)
must have the keys it shows, and the values it shows where they follow from the request alone
(row counts, steps, names, states); losses and probabilities depend on the arithmetic, so
only their keys are checked. A command shown without an answer must not answer an error.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.config import Settings
from tests.live_server import ROOT, serving

SECTION = "## A first session"
PLACEHOLDER = "[[...54 numbers...], ...]"
ONE_ROW = "[[...54 numbers...]]"
# Keys whose value follows from the requests alone: counts, names, and the version bookkeeping
# (a first evaluation round always improves on no best). Losses, metrics and predictions
# depend on float arithmetic: only their keys are checked.
DETERMINISTIC = {
    "model", "name", "step", "samples_seen", "trained", "state", "batch_id", "duplicate",
    "version", "parent", "reason", "status", "served", "served_version", "head_version",
    "id", "kind",
}  # fmt: skip


@dataclass
class Step:
    command: str
    answer: str | None  # the JSON shown after `# →`, or None


def section(text: str) -> str:
    start = text.index(f"\n{SECTION}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def steps(block: str) -> list[Step]:
    """The bash block's commands, each with the answer shown after it."""
    found: list[Step] = []
    command: list[str] = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("# →"):
            found[-1].answer = stripped.removeprefix("# →").strip()
        elif stripped.startswith("#    ") and found and found[-1].answer is not None:
            found[-1].answer += " " + stripped.removeprefix("#").strip()
        elif (stripped.startswith("#") or not stripped) and not command:
            continue
        else:
            command.append(line)
            if not _continues(command):
                found.append(Step("\n".join(command), None))
                command = []
    return found


def _continues(lines: list[str]) -> bool:
    """A command goes on after a trailing backslash or inside an open single quote."""
    return lines[-1].rstrip().endswith("\\") or "\n".join(lines).count("'") % 2 == 1


def bash_block(text: str) -> str:
    match = re.search(r"```bash\n(.*?)```", section(text), re.S)
    assert match, f"no bash block under {SECTION!r}"
    return match.group(1)


def shown(answer: str) -> Any:
    """The README's answer as JSON: `...` elisions dropped."""
    without_elisions = re.sub(r",\s*\.\.\.", "", answer)
    return json.loads(re.sub(r"\[\s*\.\.\.\s*\]", "[]", without_elisions))


def covers(actual: Any, expected: Any, path: str = "") -> Iterator[str]:
    """Differences: a key shown but missing, or a deterministic value that differs."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                yield f"{path}{key}: missing (answer has {sorted(actual)})"
            elif isinstance(value, dict | list):
                yield from covers(actual[key], value, f"{path}{key}.")
            elif key in DETERMINISTIC and actual[key] != value:
                yield f"{path}{key}: README shows {value!r}, the service answers {actual[key]!r}"
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        for index, item in enumerate(expected):
            yield from covers(actual[index], item, f"{path}{index}.")


def rows(count: int, seed: int) -> tuple[list[list[float]], list[int]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, count)
    x = rng.normal(size=(count, 54)) + y[:, None] * 0.5
    return np.round(x, 3).tolist(), y.tolist()


def filled(command: str, url: str, rows_stated: int, folder: Path) -> str:
    """The command against `url`, with seeded rows in place of the placeholders (sent from a
    file: hundreds of rows are too long for one command-line argument)."""
    command = command.replace("localhost:8000", url.removeprefix("http://"))
    bodies = {PLACEHOLDER: (rows_stated, 0, "rows.json"), ONE_ROW: (1, 1, "row.json")}
    for placeholder, (count, seed, name) in bodies.items():
        if placeholder in command:
            x, y = rows(count, seed=seed)
            body = {"inputs": x, "targets": y} if count > 1 else {"inputs": x}
            (folder / name).write_text(json.dumps(body))
            command = re.sub(
                r"-d '\{\"inputs\".*?\}'", f"--data-binary @{folder / name}", command, flags=re.S
            )
    return command


def stated_rows(block: str) -> int:
    """The number of rows the section says its partial-fit sends (`# N labelled rows`)."""
    match = re.search(r"# stream (\d+) labelled rows", block)
    assert match, "the partial-fit comment should say how many rows it sends"
    return int(match.group(1))


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    with serving(settings) as base:
        yield base


def test_the_first_session_answers_what_the_readme_shows(url: str, tmp_path: Path) -> None:
    block = bash_block((ROOT / "README.md").read_text())
    count = stated_rows(block)
    problems: list[str] = []
    for step in steps(block):
        ran = subprocess.run(
            ["bash", "-c", filled(step.command, url, count, tmp_path)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        answer = json.loads(ran.stdout)
        first_line = step.command.splitlines()[0]
        if step.answer is None:
            if isinstance(answer, dict) and "code" in answer:
                problems.append(f"{first_line}: error {answer}")
            continue
        problems += [f"{first_line}: {p}" for p in covers(answer, shown(step.answer))]
    assert problems == []


def test_the_session_is_parsed_into_its_commands() -> None:
    """Guards the parser: every curl of the section is one step, answers where shown."""
    block = bash_block((ROOT / "README.md").read_text())
    parsed = steps(block)
    assert len(parsed) == block.count("curl ")
    assert sum(step.answer is not None for step in parsed) >= 2
