"""The `gradual` command line: serve the API, run migrations."""

from __future__ import annotations

import logging

import typer
import uvicorn

from service.config import Settings
from service.db import migrate as migrations

app = typer.Typer(help="Gradual: online learning for PyTorch models.", no_args_is_help=True)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default GRADUAL_HOST)."),
    port: int | None = typer.Option(None, help="Port (default GRADUAL_PORT)."),
) -> None:
    """Start the HTTP service (runs migrations first)."""
    from service.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision and exit."""
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url)
    typer.echo(f"database at head: {settings.resolved_database_url.split('@')[-1]}")
