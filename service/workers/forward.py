"""A reader's front: what it answers itself, and the byte-for-byte relay of everything else
to the trainer over its private Unix socket (status, headers and body, streamed both ways)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response

# Connection-level headers: each hop has its own (the body is framed again on each side).
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)
# POST routes that predict: /v1 predict, /v2 infer (of the served or a named version)
PREDICT = re.compile(r"/v1/models/([^/]+)/predict|/v2/models/([^/]+)/(?:versions/[^/]+/)?infer")
# On a reader's answers: the reader's pid, on those it gave (READER) or relayed (FORWARDED)
READER, FORWARDED = b"x-gradual-reader", b"x-gradual-forwarded-by"


def trainer_client(path: Path) -> httpx.AsyncClient:
    """A client of the trainer's private socket; no read timeout (event streams, long fits)."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)),
        base_url="http://trainer",
        timeout=httpx.Timeout(None, connect=5.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


def predicted_model(scope: Scope) -> str | None:
    """The model a predict or infer request names, else None."""
    if scope["method"] != "POST":
        return None
    matched = PREDICT.fullmatch(scope["path"])
    return None if matched is None else matched.group(1) or matched.group(2)


class Forward:
    """Answers here the predictions of models this reader holds (and /healthz); relays every
    other request to the trainer. Each answer names the reader's `pid` in one more header."""

    def __init__(
        self, app: ASGIApp, *, holds: Callable[[str], bool],
        trainer: Callable[[], httpx.AsyncClient], pid: int,
    ) -> None:  # fmt: skip
        self.app = app
        self.holds = holds
        self.trainer = trainer
        self.mark = (READER, str(pid).encode())
        self.relayed = (FORWARDED, str(pid).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
        elif scope["type"] == "http" and self._local(scope):
            await self.app(scope, receive, self._marked(send))
        elif scope["type"] == "http":
            await relay(self.trainer(), scope, receive, send, mark=self.relayed)

    def _local(self, scope: Scope) -> bool:
        if scope["path"] == "/healthz":
            return True
        name = predicted_model(scope)
        return name is not None and self.holds(name)

    def _marked(self, send: Send) -> Send:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.mark]
            await send(message)

        return marked


async def relay(
    client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send,
    *, mark: tuple[bytes, bytes],
) -> None:  # fmt: skip
    """Sends the request to the trainer and its answer back, both streamed; a client that goes
    away mid-answer (an event stream) ends the relay."""
    headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
    framed = any(k in {b"content-length", b"transfer-encoding"} for k, _ in scope["headers"])
    body_read = anyio.Event()
    content = _body(receive, body_read) if framed else None
    if content is None:
        body_read.set()
    target = scope.get("raw_path") or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    request = client.build_request(
        scope["method"], "http://trainer" + target.decode("latin-1"), headers=headers,
        content=content,
    )  # fmt: skip
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_cancel_on_disconnect, receive, body_read, tasks.cancel_scope)
        await _answer(client, request, send, mark)
        tasks.cancel_scope.cancel()


async def _answer(
    client: httpx.AsyncClient, request: httpx.Request, send: Send, mark: tuple[bytes, bytes]
) -> None:
    try:
        response = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        message = f"the trainer process did not answer: {type(exc).__name__}"
        refusal = error_response(503, "unavailable", message, None)
        refusal.headers["retry-after"] = "1"
        refusal.headers[mark[0].decode()] = mark[1].decode()
        await refusal({"type": "http"}, _nothing, send)
        return
    try:
        headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
        headers.append(mark)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})  # fmt: skip
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()


async def _body(receive: Receive, read: anyio.Event) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise httpx.ReadError("the client went away")  # aborts the request to the trainer
        yield message.get("body", b"")
        if not message.get("more_body", False):
            read.set()
            return


async def _cancel_on_disconnect(
    receive: Receive, body_read: anyio.Event, scope: anyio.CancelScope
) -> None:
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
