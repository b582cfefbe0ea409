"""What the commands that talk to a running service share: the `--url` and `--token` options,
and a client that gives up on an unreachable service after one quick retry.

These commands import the client (httpx; NumPy once data is sent or read) and nothing of the
server, so they start fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.errors import Unreachable

if TYPE_CHECKING:
    from service.client import GradualClient

Url = Annotated[str, typer.Option(envvar="GRADUAL_URL", help="The service's base URL.")]
Token = Annotated[str | None, typer.Option(envvar="GRADUAL_TOKEN", help="Bearer token.")]
DEFAULT_URL = "http://127.0.0.1:8000"


@contextmanager
def connect(url: str, token: str | None) -> Iterator[GradualClient]:
    """A client that gives up on an unreachable service after one quick retry."""
    from service.client import GradualClient, GradualConnectionError, RetryPolicy

    try:
        with GradualClient(url, token=token, retry=RetryPolicy(attempts=2)) as client:
            yield client
    except GradualConnectionError as error:
        raise Unreachable(url, error.message) from error
