"""How the `gradual` command fails: one line on stderr and an exit status per kind of failure.

A refusal from the service prints `error: 409 model_exists: a model named 'covtype' exists
already (name)`; `--verbose` prints the traceback first. Only this module and `service.cli.main`
know the exit statuses; the client raises its own errors and knows nothing of them.
"""

from __future__ import annotations

import traceback
from enum import IntEnum
from typing import Any

import typer
from typer.core import TyperGroup


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # `check` found problems, or the service failed (5xx)
    USAGE = 2  # bad options or arguments, or an unreadable data file (click's own status)
    NOT_FOUND = 3  # 404: no such model or version
    CONFLICT = 4  # 409: the name is taken, or the request conflicts with the model's state
    REFUSED = 5  # any other 4xx: invalid input, no or a weak token, archived version, queue full
    UNREACHABLE = 6  # no answer: refused connection, unknown host, timeout


EXIT_CODES_HELP = (
    "Exit status: 0 done; 1 failed (check found problems, or a 5xx); 2 usage (bad options or "
    "file); 3 not found (404); 4 conflict (409); 5 refused (another 4xx); 6 unreachable. "
    "Errors are one line; --verbose adds the traceback."
)


class DataFileError(Exception):
    """A local data file the command cannot read (format, columns, values)."""


class Unreachable(Exception):
    """No answer from the service at `url`, after the client's retries."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")


def exit_code_for(status: int) -> ExitCode:
    """The exit status for an HTTP error status (0: the service was not reached)."""
    if status == 0:
        return ExitCode.UNREACHABLE
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if 400 <= status < 500:
        return ExitCode.REFUSED
    return ExitCode.FAILED


def describe(error: Exception) -> tuple[str, ExitCode] | None:
    """The one-line report and exit status for an expected failure; None for a bug."""
    from service.client.errors import GradualClientError

    if isinstance(error, Unreachable):
        return str(error), ExitCode.UNREACHABLE
    if isinstance(error, GradualClientError):
        field = f" ({error.field})" if error.field else ""
        return f"{error.status} {error.code}: {error.message}{field}", exit_code_for(error.status)
    if isinstance(error, DataFileError):
        return str(error), ExitCode.USAGE
    return None


class ReportingGroup(TyperGroup):
    """Turns the client's errors into one line and an exit status (the traceback too, with
    `--verbose`); usage errors stay click's (status 2), bugs keep their traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except Exception as error:
            report = describe(error)
            if report is None:
                raise
            if ctx.params.get("verbose"):
                typer.echo("".join(traceback.format_exception(error)), err=True, nl=False)
            message, code = report
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(int(code)) from None
