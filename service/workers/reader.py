"""A reader process: the app with a lifespan of its own (served versions only, loaded from
the registry and the weight store, kept in step by the trainer's feed), behind `Forward`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import torch
import uvicorn
from fastapi import FastAPI

from service.config import Settings
from service.runtime.hub import ModelHub
from service.runtime.metrics import Metrics
from service.storage.db.engine import make_engine, make_sessionmaker
from service.storage.registry import Registry
from service.storage.weightstore import open_store
from service.workers.channel import FEED, Served
from service.workers.forward import Forward, trainer_client
from service.workers.served import ServedModels

log = logging.getLogger("gradual.reader")
PR_SET_PDEATHSIG = 1
WAIT_S = 0.05


def die_with_parent(parent: int) -> None:
    """The kernel kills this process when the trainer dies (Linux), so that a killed trainer
    leaves nobody holding its port; elsewhere the feed's end stops it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def reader_lifespan(settings: Settings, trainer: Path):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # one intra-op thread per reader unless set: the processes share the cores
        torch.set_num_threads(settings.torch_threads or 1)
        engine = make_engine(settings.resolved_database_url)  # used for reads only
        hub = ModelHub(
            settings, Registry(make_sessionmaker(engine)), open_store(settings),
            metrics=app.state.metrics,
        )  # fmt: skip
        models = ServedModels(hub)
        client = trainer_client(trainer)
        app.state.settings, app.state.hub, app.state.trainer = settings, models, client
        app.state.loaded = False
        lines = await _open_feed(client)
        await models.follow(await anext(lines))
        app.state.loaded = True
        following = asyncio.create_task(_follow(lines, models))
        log.info("reader %d ready: %d models", os.getpid(), len(models))
        try:
            yield
        finally:
            following.cancel()
            await models.close()
            await client.aclose()
            engine.dispose()

    return lifespan


async def _open_feed(client: httpx.AsyncClient) -> AsyncIterator[Served]:
    """The trainer's feed of served versions, one dict per change; waits for the trainer to
    open its socket (it starts the readers before it migrates and loads its models)."""
    while True:
        try:
            response = await client.send(client.build_request("GET", FEED), stream=True)
            break
        except httpx.TransportError:
            await asyncio.sleep(WAIT_S)
    response.raise_for_status()

    async def lines() -> AsyncIterator[Served]:
        try:
            async for line in response.aiter_lines():
                yield {name: (int(i), int(v)) for name, (i, v) in orjson.loads(line).items()}
        finally:
            await response.aclose()

    return lines()


async def _follow(lines: AsyncIterator[Served], models: ServedModels) -> None:
    """Applies each change; the feed's end means the trainer stopped: so does this reader."""
    try:
        async for served in lines:
            await models.follow(served)
    except httpx.TransportError:
        pass
    log.info("reader %d: the trainer's feed ended; stopping", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def serve_reader(settings: Settings, *, listener: int, trainer: Path, metrics: Metrics) -> None:
    """Accepts on the inherited listening socket `listener` until SIGTERM (then drains)."""
    from service.app import create_app

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
    app = create_app(settings, lifespan=reader_lifespan(settings, trainer), metrics=metrics)
    front = Forward(
        app, holds=lambda name: app.state.hub.has(name), trainer=lambda: app.state.trainer,
        pid=os.getpid(),
    )  # fmt: skip
    config = uvicorn.Config(
        front, log_level=settings.log_level, timeout_graceful_shutdown=30, http=settings.http,
        loop=settings.loop, access_log=settings.access_log,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C, after the graceful stop
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=listener)])
