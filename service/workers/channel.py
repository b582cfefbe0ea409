"""The trainer's private Unix socket: the app as the public port serves it, plus the feed of
served versions the readers follow. Nothing here is reachable from the network."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from pathlib import Path

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.runtime.hub import ModelHub

FEED = "/_trainer/served"
POLL_S = 0.005  # how often the trainer looks at the published statuses while readers listen

# (model id, served version) per model name
Served = dict[str, tuple[int, int]]


def socket_path(data_dir: Path) -> Path:
    """The private socket's path: in the data dir, unless that is too long for a Unix socket
    (about 100 bytes), then in the temp dir."""
    path = data_dir.resolve() / "trainer.sock"
    if len(os.fsencode(path)) < 100:
        return path
    return Path(tempfile.gettempdir()) / f"gradual-{os.getpid()}.sock"


def bind(path: Path) -> socket.socket:
    """A listening Unix socket at `path` (a stale one left by a killed trainer is replaced),
    readable and writable by this user only."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def served_by(hub: ModelHub, before: Served | None = None) -> Served:
    """Each model's served version, once its row and file are written (readers load it from
    there); until then the version announced `before`, if any."""
    served: Served = {}
    for live in hub.all():
        version = live.status.served_version
        if version not in live.recorder.unwritten:
            served[live.name] = (live.id, version)
        elif before is not None and live.name in before:
            served[live.name] = before[live.name]
    return served


class ServedWatch:
    """The served versions, looked at every POLL_S by one task while any reader listens
    (the writers publish statuses from their threads; looking costs a dict per model)."""

    def __init__(self, hub: ModelHub) -> None:
        self.hub = hub
        self.current = served_by(hub)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def changes(self, seen: Served | None) -> Served:
        """The served versions once they differ from `seen`."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch())
        while self.current == seen:
            await self._changed.wait()
        return self.current

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            served = served_by(self.hub, self.current)
            if served != self.current:
                self.current, changed = served, self._changed
                self._changed = asyncio.Event()
                changed.set()


class TrainerChannel:
    """The app, and at FEED an NDJSON stream: every model's served version, one line at start
    and one more each time any of them changes (a model created, deleted, promoted, ...)."""

    def __init__(self, app: ASGIApp, watch: ServedWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != FEED:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/x-ndjson")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.ensure_future(_disconnected(receive))  # the reader went away
        sent: Served | None = None
        try:
            while True:
                change = asyncio.ensure_future(self.watch.changes(sent))
                await asyncio.wait({change, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    change.cancel()
                    return
                sent = change.result()
                line = orjson.dumps(sent) + b"\n"
                await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
