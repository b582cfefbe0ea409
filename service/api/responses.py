"""Response classes: orjson-rendered JSON, and a stream that coexists with reading the body."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class DuplexStreamingResponse(StreamingResponse):
    """Streams a response while the handler still reads the request body.

    Starlette's StreamingResponse (before ASGI 2.4) listens for a disconnect by calling
    `receive()` concurrently, which would steal the body chunks an NDJSON stream is reading;
    here the body iterator is the only reader, and a disconnect surfaces through it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(OSError):  # the client left; queued work still completes
            await self.stream_response(send)
        if self.background is not None:
            await self.background()
