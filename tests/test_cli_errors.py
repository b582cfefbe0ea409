"""The `gradual` command as a user runs it, in its own process against a real server: one-line
errors with an exit status per kind, the traceback only with `--verbose`, and a client path
that imports neither torch nor the server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from service.config import Settings
from tests.live_server import ROOT, free_port, serving

CREATE = ("create", "--task", "classification", "--inputs", "4", "--outputs", "3")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("cli-errors")
    with serving(Settings(data_dir=data, device="cpu", torch_threads=1)) as base:
        yield base


def gradual(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` in its own process, without the runner's GRADUAL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_taken_name_is_one_line_and_exit_status_4(url: str) -> None:
    assert gradual(CREATE[0], "taken", *CREATE[1:], "--url", url).returncode == 0
    again = gradual(CREATE[0], "taken", *CREATE[1:], "--url", url)
    assert again.returncode == 4
    assert again.stderr == (
        "error: 409 model_exists: a model named 'taken' exists already (name)\n"
    )


def test_an_unknown_model_is_exit_status_3(url: str) -> None:
    result = gradual("versions", "nowhere", "--url", url)
    assert (result.returncode, result.stderr) == (
        3, "error: 404 model_not_found: no model named 'nowhere' (name)\n"
    )  # fmt: skip


def test_an_invalid_spec_is_refused_with_exit_status_5_naming_the_field(url: str) -> None:
    result = gradual(CREATE[0], "bad", *CREATE[1:], "--dropout", "2", "--url", url)
    assert result.returncode == 5
    assert result.stderr.startswith("error: 422 invalid_field: spec.dropout: ")
    assert result.stderr.endswith(" (spec.dropout)\n")
    assert result.stderr.count("\n") == 1


def test_an_unreachable_service_is_exit_status_6() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = gradual("models", "--url", nobody)
    assert result.returncode == 6
    assert result.stderr.startswith(f"error: cannot reach {nobody}: GET /v1/models: ConnectError")
    assert result.stderr.count("\n") == 1


def test_a_usage_error_is_exit_status_2() -> None:
    result = gradual("create", "nameonly")
    assert result.returncode == 2
    assert "Missing option '--task'" in result.stderr


def test_verbose_shows_the_traceback_then_the_line(url: str) -> None:
    result = gradual("--verbose", "versions", "nowhere", "--url", url)
    assert result.returncode == 3
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "GradualClientError: 404 model_not_found" in result.stderr
    assert result.stderr.endswith("error: 404 model_not_found: no model named 'nowhere' (name)\n")


def test_help_documents_the_exit_statuses() -> None:
    result = gradual("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    for kind in ("2 usage", "3 not found", "4 conflict", "5 refused", "6 unreachable"):
        assert kind in text


def test_a_client_command_imports_neither_torch_nor_the_server(url: str) -> None:
    """Startup time is the user's: `models` runs, then the modules it loaded are listed
    (NumPy too: only commands that send or read data need it)."""
    probe = (
        "import sys\n"
        "from service.cli.main import app\n"
        f"app(['models', '--url', {url!r}], standalone_mode=False)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in"
        " {'torch', 'fastapi', 'sqlalchemy', 'numpy'}"
        " or m in {'service.app', 'service.runtime.hub', 'service.config'}]\n"
        "print('heavy:', sorted(heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert "taken" in result.stdout or "name" in result.stdout  # the table was printed
    assert result.stdout.splitlines()[-1] == "heavy: []"
