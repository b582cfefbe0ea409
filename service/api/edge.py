"""The request edge: one pure ASGI layer that refuses a request before routing.

It reads the headers once and checks, in this order: the trusted host (400), a cross-site
write's `Origin` (403), the model name in the raw path (422, or 400 `{"error"}` on the /v2
protocol routes), the body's media type (415) and size (413). The rules are those of
`service.api.guards` and `service.api.limits`; this layer only runs them in one pass instead
of five nested middlewares, each rebuilding the headers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.api.guards import NAME_MESSAGE, host_name, trusted, valid_name_in
from service.api.limits import ACCEPTED, NDJSON, PROTOCOL_ACCEPTED, WITH_BODY, bounded_body
from service.api.responses import FastJSONResponse
from service.errors import BodyTooLarge, CrossOrigin, UnsupportedMediaType, UntrustedHost

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class Edge:
    def __init__(
        self, app: ASGIApp, *, hosts: tuple[str, ...], origins: tuple[str, ...], max_bytes: int
    ) -> None:
        self.app = app
        self.hosts = frozenset(host.lower() for host in hosts)
        self.origins = frozenset(origins)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = first_of_each(scope["headers"])
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif scope["type"] == "http" and self._unbounded(scope, headers):
            await bounded_body(self.app, self.max_bytes, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not trusted(host, self.hosts):
            message = f"host {host!r} is not in GRADUAL_TRUSTED_HOSTS"
            return error_response(400, UntrustedHost.code, message, "host")
        if scope["type"] != "http":
            return None
        origin = headers.get(b"origin")
        if scope["method"] not in SAFE and origin is not None:
            text = origin.decode("latin-1")
            if not self.allowed(text):
                message = f"a write from origin {text!r} is refused (cross-site request)"
                return error_response(403, CrossOrigin.code, message, "origin")
        raw_path = _raw_path(scope)
        if not valid_name_in(raw_path):
            if raw_path.startswith(b"/v2/"):
                return FastJSONResponse({"error": NAME_MESSAGE}, status_code=400)
            return error_response(422, "invalid_field", NAME_MESSAGE, "name")
        return self._body_refusal(scope, headers)

    def allowed(self, origin: str) -> bool:
        if origin in self.origins:
            return True
        host = urlsplit(origin).hostname  # None for "null" (sandboxed pages, file://)
        return host is not None and trusted(host, self.hosts)

    def _body_refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        if scope["method"] not in WITH_BODY:
            return None
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        declared = headers.get(b"content-length")
        accepted = PROTOCOL_ACCEPTED if scope["path"].startswith("/v2/") else ACCEPTED
        if kind not in accepted and declared != b"0":
            message = f"unsupported content type {kind.decode(errors='replace')!r}"
            return error_response(415, UnsupportedMediaType.code, message, None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            message = f"the body exceeds the limit of {self.max_bytes} bytes"
            return error_response(413, BodyTooLarge.code, message, None)
        return None

    @staticmethod
    def _unbounded(scope: Scope, headers: dict[bytes, bytes]) -> bool:
        """A body of unknown length (chunked), read up to the limit before the route."""
        if scope["method"] not in WITH_BODY or b"content-length" in headers:
            return False
        return headers.get(b"content-type", b"").split(b";")[0].strip().lower() != NDJSON


def first_of_each(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Header values by name; a repeated header's first value, as Starlette's `get` reads."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers.setdefault(name, value)
    return headers


def _raw_path(scope: Scope) -> bytes:
    raw: bytes | None = scope.get("raw_path")
    return raw.split(b"?", 1)[0] if raw else scope["path"].encode()
