"""Every benchmark script still runs: `python -m bench.<name> --smoke` exits 0 with its figures.

The scripts start at once (each boots its own servers), so the file takes about as long as
the slowest of them: about 35 s on an idle two-core machine. Their figures mean nothing here,
only that they were printed. The timeout is generous so that a busy machine does not fail it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (
    "partial_fit", "predict", "rollback", "memory", "microbatch", "prequential", "race",
)  # fmt: skip
TIMEOUT_S = 120
FIGURE = re.compile(r"^figure .+: -?\d+\.\d+ \S+ \(target .+\)$", re.MULTILINE)


@dataclass(frozen=True)
class SmokeRun:
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SmokeRun]]:
    logs = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {}
    for name in SCRIPTS:
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            command = [sys.executable, "-m", f"bench.{name}", "--smoke"]
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        runs[name] = SmokeRun(process, log)
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_runs_in_smoke_mode_and_prints_its_figures(
    smoke_runs: dict[str, SmokeRun], name: str
) -> None:
    run = smoke_runs[name]
    try:
        code = run.process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bench.{name} --smoke ran past {TIMEOUT_S} s")
    output = run.log.read_text()
    assert code == 0, output[-3000:]
    assert FIGURE.search(output), output[-3000:]


def test_the_wrk_bench_runs_in_smoke_mode_after_the_others() -> None:
    """bench.http_wrk boots servers of its own (TorchServe too, where bench/torchserve_setup
    installed it): run alone, after the others, so that its boots do not add to theirs on two
    cores. Needs Debian's wrk."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    command = [sys.executable, "-m", "bench.http_wrk", "--smoke"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert FIGURE.search(done.stdout), done.stdout[-3000:]
