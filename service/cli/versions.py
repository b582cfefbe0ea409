"""`gradual versions`, `promote` and `rollback`: a model's versions and which one it serves."""

from __future__ import annotations

import typer

from service.cli.remote import DEFAULT_URL, Token, Url, connect


def versions(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """A model's versions."""
    from rich.console import Console
    from rich.table import Table

    table = Table("version", "step", "samples", "metrics", "reason", "status", "served")
    with connect(url, token) as client:
        for v in client.versions(name):
            metrics = ", ".join(f"{k} {val:.4g}" for k, val in v.metrics.items())
            table.add_row(
                str(v.version), str(v.step), str(v.samples_seen), metrics, v.reason, v.status,
                "●" if v.served else "",
            )  # fmt: skip
    Console().print(table)


def rollback(name: str, version: int, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Serve a version and reset the training head to it."""
    with connect(url, token) as client:
        client.rollback(name, version)
    typer.echo(f"{name}: serving v{version}; the head restarts from it")


def promote(name: str, version: int, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Serve a version; the training head carries on."""
    with connect(url, token) as client:
        client.promote(name, version)
    typer.echo(f"{name}: serving v{version}")
