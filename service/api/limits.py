"""Pure ASGI middleware at the edge: body size (413) and media type (415), before any route.

A body with a declared `Content-Length` over the limit is refused without reading it. A body
sent without one (chunked) is read up to the limit and refused as soon as it passes it, then
replayed to the route. NDJSON streams are bounded per line by their reader instead.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import BodyTooLarge, UnsupportedMediaType

NDJSON = b"application/x-ndjson"
ACCEPTED = frozenset(
    {b"", b"application/json", NDJSON, b"application/x-npy", b"application/x-safetensors"}
)
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# /v2 infer reads a binary tensor body itself (service.oip.binary_tensors); clients may label it so.
PROTOCOL_ACCEPTED = ACCEPTED | {b"application/octet-stream"}


class RequestEdge:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        declared = headers.get(b"content-length")
        accepted = PROTOCOL_ACCEPTED if scope["path"].startswith("/v2/") else ACCEPTED
        if kind not in accepted and declared != b"0":
            message = f"unsupported content type {kind.decode(errors='replace')!r}"
            await _refuse(415, UnsupportedMediaType.code, message, scope, receive, send)
        elif declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(413, BodyTooLarge.code, self._message(), scope, receive, send)
        elif declared is not None or kind == NDJSON:
            await self.app(scope, receive, send)
        else:
            await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reads a body of unknown length up to the limit, then hands it on."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _refuse(413, BodyTooLarge.code, self._message(), scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"the body exceeds the limit of {self.max_bytes} bytes"


async def _refuse(
    status: int, code: str, message: str, scope: Scope, receive: Receive, send: Send
) -> None:
    await error_response(status, code, message, None)(scope, receive, send)
