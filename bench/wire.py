"""A lean HTTP/1.1 keep-alive client on asyncio streams: the benchmarks' load generator.

httpx costs the client hundreds of microseconds per request; on a two-core machine that CPU is
taken from the server under test. This client sends pre-encoded bodies and parses only the
status line, the length headers and the body, so nearly all the CPU goes to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = "application/json"
NDJSON = "application/x-ndjson"
NPY = "application/x-npy"


class HttpError(RuntimeError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def ok(self) -> Response:
        if self.status >= 300:
            raise HttpError(self.status, self.body)
        return self


class Connection:
    """One keep-alive connection; requests on it run one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = JSON
    ) -> Response:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        return await self.response()

    async def post(self, path: str, payload: Any) -> Any:
        return (await self.request("POST", path, orjson.dumps(payload))).ok().json()

    async def get(self, path: str) -> Any:
        return (await self.request("GET", path)).ok().json()

    async def response(self) -> Response:
        status, headers = await self._head()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b"".join([chunk async for chunk in self._chunks()])
        else:
            body = b""
        return Response(status, body)

    async def stream(
        self, path: str, lines: Iterable[bytes], on_line: Callable[[bytes], None]
    ) -> int:
        """Sends `lines` as one chunked NDJSON body while reading the answer's lines as they
        come (reading and writing at once: the server answers before the body ends)."""
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {NDJSON}\r\n"
            "transfer-encoding: chunked\r\n\r\n"
        )
        self.writer.write(head.encode())
        sender = asyncio.create_task(self._send_chunks(lines))
        status, _ = await self._head()
        buffer = b""
        async for chunk in self._chunks():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                on_line(line)
        await sender
        return status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def _send_chunks(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            data = line + b"\n"
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def _head(self) -> tuple[int, dict[str, str]]:
        block = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = block.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        return int(status_line.split()[1]), headers

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            chunk = await self.reader.readexactly(size + 2)
            yield chunk[:-2]


@dataclass
class LoadResult:
    """Requests completed inside the measured window, and their latencies in seconds."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    total: int = 0  # every request answered, warm-up included

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


async def closed_loop(
    port: int, path: str, bodies: list[bytes], *, clients: int, seconds: float,
    warmup: float = 0.3,
) -> LoadResult:  # fmt: skip
    """`clients` connections, each sending its next request as soon as the last is answered.

    The window opens after `warmup` and lasts `seconds`, or longer until `clients` requests
    have finished in it (so that a starved run still measures something).
    """
    connections = [await Connection.open(port) for _ in range(clients)]
    start = time.perf_counter() + warmup
    finished: list[tuple[float, float]] = []  # (when, latency), inside the window
    total = 0

    def measuring() -> bool:
        return time.perf_counter() < start + seconds or len(finished) < clients

    async def client(index: int, connection: Connection) -> None:
        nonlocal total
        sent = index
        while measuring():
            body = bodies[sent % len(bodies)]
            sent += clients
            begin = time.perf_counter()
            (await connection.request("POST", path, body)).ok()
            done = time.perf_counter()
            total += 1
            if done >= start:
                finished.append((done, done - begin))

    try:
        await asyncio.gather(*(client(i, c) for i, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    finished.sort()
    end = max(start + seconds, finished[clients - 1][0])
    latencies = [latency for when, latency in finished if when <= end]
    return LoadResult(end - start, latencies, total)


def run_load(
    port: int, path: str, bodies: list[bytes], *, clients: int, seconds: float
) -> LoadResult:
    """`closed_loop` from synchronous code, on a fresh event loop."""
    return asyncio.run(closed_loop(port, path, bodies, clients=clients, seconds=seconds))
