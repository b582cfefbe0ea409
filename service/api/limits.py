"""Body limits at the edge (`service.api.edge`): size (413) and media type (415).

A body with a declared `Content-Length` over the limit is refused without reading it. A body
sent without one (chunked) is read up to the limit and refused as soon as it passes it, then
replayed to the route. NDJSON streams are bounded per line by their reader instead.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import BodyTooLarge

NDJSON = b"application/x-ndjson"
ACCEPTED = frozenset(
    {b"", b"application/json", NDJSON, b"application/x-npy", b"application/x-safetensors"}
)
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# /v2 infer reads a binary tensor body itself (service.oip.binary_tensors); clients may label it so.
PROTOCOL_ACCEPTED = ACCEPTED | {b"application/octet-stream"}


async def bounded_body(
    app: ASGIApp, max_bytes: int, scope: Scope, receive: Receive, send: Send
) -> None:
    """Reads a body of unknown length up to the limit (413 past it), then hands it on."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > max_bytes:
            refusal = f"the body exceeds the limit of {max_bytes} bytes"
            await error_response(413, BodyTooLarge.code, refusal, None)(scope, receive, send)
            return
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    await app(scope, replay, send)
