"""scripts/gpu-check runs its CPU path (CUDA hidden) to the end and writes its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_without_a_device_skips_the_cuda_parts_and_passes(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check"), str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    text = report.read_text()
    assert done.returncode == 0, text
    assert "CUDA device: none" in text
    assert "5 skipped" in text
    assert "skipped: no CUDA device" in text
    assert text.rstrip().endswith("passed")
