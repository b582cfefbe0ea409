"""The trainer process of `gradual serve --workers N`: the service as one process runs it, its
private socket for the readers, and the readers it starts, watches and stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp
from uvicorn._compat import asyncio_run

from service.config import Settings
from service.workers.channel import ServedWatch, TrainerChannel, bind, socket_path

log = logging.getLogger("gradual.workers")
DRAIN_S = 40.0  # a reader's own graceful stop is 30 s
RESPAWN_S = 1.0


class Readers:
    """The reader processes: spawned (never forked: torch and threads), each accepting on the
    trainer's listening socket; a reader that dies is started again until they are stopped."""

    def __init__(self, count: int, command: list[str], listener: int, env: dict[str, str]):
        self.count, self.command, self.listener, self.env = count, command, listener, env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Always from the main thread: a reader's parent-death signal fires when the thread
        # that started it ends, not the process.
        return subprocess.Popen(self.command, pass_fds=(self.listener,), env=self.env)

    def respawn_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if not self.stopping and process.poll() is not None:
                log.error("reader %d exited with %s; starting another", process.pid,
                          process.returncode)  # fmt: skip
                self.processes[index] = self._spawn()

    def stop(self) -> None:
        """SIGTERM to each reader, then waits while they drain (killed after DRAIN_S)."""
        if self.stopping:
            return
        self.stopping = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=DRAIN_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


class TrainerServer(uvicorn.Server):
    """uvicorn's server, whose stop (SIGTERM, SIGINT) first stops the readers: their
    in-flight requests may still need this process."""

    readers: Readers | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        readers = self.readers
        if readers is None or readers.stopping or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        threading.Thread(target=self._stop_readers, args=(readers,), daemon=True).start()

    def _stop_readers(self, readers: Readers) -> None:
        readers.stop()
        self.should_exit = True


class PrivateServer(uvicorn.Server):
    """The private socket's server: signals are the public server's to handle."""

    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def serve_with_readers(app: FastAPI, settings: Settings, processes: int, metrics: Path) -> None:
    config = _config(app, settings, host=settings.host, port=settings.port)
    listener = config.bind_socket()
    command = _reader_command(listener, socket_path(settings.data_dir), metrics)
    readers = Readers(processes - 1, command, listener.fileno(), _reader_env(settings))
    # Started now, from the main thread: they import torch and the app while this process
    # migrates and loads, then wait for its private socket.
    readers.start()
    try:
        asyncio_run(Beside(app, settings, readers).serve(config, listener),
                    loop_factory=config.get_loop_factory())  # fmt: skip
    except KeyboardInterrupt:  # Ctrl+C, after the graceful stop (as uvicorn.run does)
        pass
    finally:
        readers.stop()  # (a start that failed: nobody is left holding the port)


class Beside:
    """The public server, and beside it once the trainer is ready: the private socket's
    server (which the readers wait for) and the readers' watch; stopped in reverse order."""

    def __init__(self, app: FastAPI, settings: Settings, readers: Readers) -> None:
        self.app, self.settings, self.readers = app, settings, readers
        self.path = socket_path(settings.data_dir)
        self.channel: PrivateServer | None = None
        self.serving: asyncio.Task[None] | None = None  # the private socket's server
        self.watching: asyncio.Task[None] | None = None

    async def serve(self, config: uvicorn.Config, listener: socket.socket) -> None:
        server = TrainerServer(config)
        starting = asyncio.create_task(self._start(server))
        try:
            # awaited here, not in a task: the clean stop's SystemExit comes through this frame
            await server.serve(sockets=[listener])
        finally:
            starting.cancel()
            await self._stop()

    async def _start(self, server: TrainerServer) -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        watch = ServedWatch(self.app.state.hub)
        self.channel = PrivateServer(_config(TrainerChannel(self.app, watch), self.settings))
        self.serving = asyncio.create_task(self.channel.serve(sockets=[bind(self.path)]))
        server.readers = self.readers
        log.info("serving with %d readers: %s", len(self.readers.pids), self.readers.pids)
        self.watching = asyncio.create_task(_watch(self.readers))

    async def _stop(self) -> None:
        if not self.readers.stopping:
            await asyncio.to_thread(self.readers.stop)
        if self.watching is not None:
            self.watching.cancel()
        if self.channel is not None and self.serving is not None:
            self.channel.should_exit = True  # no reader is left to ask anything of it
            await self.serving
        self.path.unlink(missing_ok=True)


async def _watch(readers: Readers) -> None:
    while True:
        await asyncio.sleep(RESPAWN_S)
        readers.respawn_dead()


def _config(app: ASGIApp, settings: Settings, **where: object) -> uvicorn.Config:
    return uvicorn.Config(
        app, log_level=settings.log_level, timeout_graceful_shutdown=30, http=settings.http,
        loop=settings.loop, access_log=settings.access_log,
        lifespan="on" if where else "off", **where,  # type: ignore[arg-type]
    )  # fmt: skip


def _reader_command(listener: socket.socket, trainer: Path, metrics: Path) -> list[str]:
    return [
        sys.executable, "-m", "service", "reader", "--listener", str(listener.fileno()),
        "--trainer", str(trainer), "--metrics", str(metrics), "--parent", str(os.getpid()),
    ]  # fmt: skip


def _reader_env(settings: Settings) -> dict[str, str]:
    """The trainer's environment, with the settings its command line changed."""
    chosen = {"GRADUAL_HOST": settings.host, "GRADUAL_PORT": str(settings.port),
              "GRADUAL_INSECURE": str(settings.insecure).lower()}  # fmt: skip
    return dict(os.environ) | chosen
