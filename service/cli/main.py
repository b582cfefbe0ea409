"""The `gradual` command line: serve the API, run migrations, and drive a running service."""

from __future__ import annotations

from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.errors import EXIT_CODES_HELP, ExitCode, ReportingGroup
from service.cli.learning import fit, predict
from service.cli.models import create, models
from service.cli.versions import promote, rollback, versions

if TYPE_CHECKING:
    from service.config import Settings

# Startup time is the user's: the commands that talk to a running service import only the
# client (httpx; NumPy once data is sent or read); torch, the server and the database come
# with `serve`, `migrate`, `check` and `demo`, inside them.
app = typer.Typer(
    help="Gradual: online learning for PyTorch models.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    cls=ReportingGroup,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the traceback of an error.")
    ] = False,
) -> None:
    """Gradual: online learning for PyTorch models."""


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default GRADUAL_HOST)."),
    port: int | None = typer.Option(None, help="Port (default GRADUAL_PORT)."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow a non-loopback bind without API tokens (open API)."
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        help="Processes answering HTTP (default GRADUAL_WORKERS: the machine's "
        "cores, at most GRADUAL_MAX_WORKERS); 1: one process, as before.",
    ),
) -> None:
    """Start the HTTP service (runs migrations first)."""
    import signal

    import uvicorn

    from service.app import create_app

    options = {"host": host, "port": port, "insecure": insecure or None, "workers": workers}
    settings = _settings(**{k: v for k, v in options.items() if v is not None})
    _log_to_stderr(settings)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again so that the process
    # dies of it (status 143). A stop that was asked for and done cleanly exits 0 instead:
    # `docker compose stop`, systemd and Kubernetes then record a clean stop, not a crash.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    processes = settings.serving_processes()
    if processes > 1:
        _serve_with_readers(settings, processes)
        return
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        http=settings.http,
        loop=settings.loop,
        access_log=settings.access_log,
    )


def _serve_with_readers(settings: Settings, processes: int) -> None:
    """The trainer (this process) and `processes - 1` readers on one port (service.workers)."""
    import shutil

    from service.app import create_app
    from service.runtime.metrics import Metrics, share_across_processes
    from service.workers.trainer import serve_with_readers

    shared = settings.data_dir / "metrics"  # this run's counters, one file per process
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    share_across_processes(shared)
    app = create_app(settings, metrics=Metrics(shared))
    serve_with_readers(app, settings, processes, shared)


@app.command(hidden=True)
def reader(
    listener: Annotated[int, typer.Option(help="The inherited listening socket's descriptor.")],
    trainer: Annotated[Path, typer.Option(help="The trainer's private socket.")],
    metrics: Annotated[Path, typer.Option(help="The shared metrics folder.")],
    parent: Annotated[int, typer.Option(help="The trainer's process id.")],
) -> None:
    """A reader process of `gradual serve --workers N` (started by the trainer, not by hand)."""
    import signal

    from service.workers.reader import die_with_parent

    die_with_parent(parent)
    from service.runtime.metrics import Metrics, share_across_processes
    from service.workers.reader import serve_reader

    settings = _settings()
    _log_to_stderr(settings)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    share_across_processes(metrics)
    serve_reader(settings, listener=listener, trainer=trainer, metrics=Metrics(metrics))


def _log_to_stderr(settings: Settings) -> None:
    import logging

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _settings(**overrides: object) -> Settings:
    """Settings from the environment and options; a refusal is a message, not a traceback."""
    from pydantic import ValidationError

    from service.config import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for problem in exc.errors():
            named = ".".join(str(part) for part in problem["loc"])
            where = f"GRADUAL_{named.upper()} ({named}): " if named else ""
            message = problem["msg"].removeprefix("Value error, ")
            typer.echo(f"error: {where}{message}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision and exit."""
    from service.storage.db import migrate as migrations

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url)
    typer.echo(f"database at head: {settings.resolved_database_url.split('@')[-1]}")


@app.command()
def check(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; write nothing at all.")
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Leave files younger than this many seconds (a live service).")
    ] = 60.0,
) -> None:
    """Verify the registry against the weight store; repair what is safe (see SECURITY.md).

    Missing or corrupt version files are marked `missing` / `corrupt` (refused with a 410);
    files no version refers to are deleted. A data directory that does not exist is refused
    (nothing is created). Exit status 1 when anything was found."""
    from service.storage import consistency
    from service.storage.db import migrate as migrations
    from service.storage.db.engine import make_engine, make_read_only_engine, make_sessionmaker
    from service.storage.registry import Registry
    from service.storage.weightstore import open_store

    settings = _settings()
    _refuse_a_missing_data_dir(settings)
    url = settings.resolved_database_url
    if dry_run:
        engine = make_read_only_engine(url)
        if not migrations.at_head(engine):
            engine.dispose()
            _usage_error(f"the database at {_where(url)} is not at the latest schema: "
                         "run `gradual migrate` first (a dry run changes nothing)")  # fmt: skip
    else:
        migrations.upgrade(url)
        engine = make_engine(url)
    try:
        registry = Registry(make_sessionmaker(engine))
        report = consistency.check(
            registry, open_store(settings), repair=not dry_run, grace_s=grace
        )
    finally:
        engine.dispose()
    for finding in report.findings:
        typer.echo(finding.describe())
    typer.echo(
        f"{report.versions} versions, {report.files} files checked: "
        + ("consistent" if report.consistent else f"{len(report.findings)} findings")
    )
    raise typer.Exit(ExitCode.OK if report.consistent else ExitCode.FAILED)


def _refuse_a_missing_data_dir(settings: Settings) -> None:
    """A check of nothing is no all-clear: the data directory (and, for the embedded SQLite
    database, its file) must exist."""
    if not settings.database_url and not settings.data_dir.is_dir():
        _usage_error(f"no data directory at {settings.data_dir.resolve()} (GRADUAL_DATA_DIR)")
    if settings.weights_url is None and not settings.weights_root.is_dir():
        _usage_error(f"no weight store at {settings.weights_root.resolve()}")
    database = settings.resolved_database_url.removeprefix("sqlite:///")
    if database != settings.resolved_database_url and not Path(database).is_file():
        _usage_error(f"no database at {database} (GRADUAL_DATABASE_URL)")


def _where(url: str) -> str:
    return url.split("@")[-1]


def _usage_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(ExitCode.USAGE)


# -- talking to a running service: models.py, learning.py and versions.py hold the commands,
# remote.py the options they share; registered in the order `gradual --help` lists them ------

for command in (models, create, fit, predict, versions, rollback, promote):
    app.command()(command)


@app.command()
def demo(
    url: Annotated[
        str | None, typer.Option(help="Use this service instead of starting one.")
    ] = None,
    output: Path = Path("gradual-demo.png"),
) -> None:
    """A guided tour: early stopping on digits, then a rollback on corrupted labels."""
    from rich.console import Console

    from service.cli import demo as tour

    tour.run(url, output, Console())
