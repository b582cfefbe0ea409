"""Pure ASGI middleware that refuses a request before routing: untrusted hosts, bad names.

`HostGuard` is the trusted-host allowlist (`GRADUAL_TRUSTED_HOSTS`): a page on an attacker's
domain that rebinds its DNS to 127.0.0.1 still sends its own name in `Host`, and is refused.

`NameGuard` checks the model name in `/v1/models/{name}` and `/v2/models/{name}` on the raw,
still percent-encoded path: `..%2fx` decodes to `../x`, which no route matches (a 404 that
hides the real problem) or, worse, another route does. Such a name is a 422 naming `name`
(400 `{"error"}` on the /v2 protocol routes), whatever follows it in the path.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.api.responses import FastJSONResponse
from service.errors import UntrustedHost
from service.schemas import NAME_PATTERN

NAME = re.compile(NAME_PATTERN.encode())
NAMED = (b"/v1/models/", b"/v2/models/")
NAME_MESSAGE = f"name: String should match pattern '{NAME_PATTERN}'"


class HostGuard:
    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.open = "*" in hosts
        self.hosts = frozenset(host.lower() for host in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"} and not self.open:
            host = host_name(Headers(scope=scope).get("host", ""))
            if not self.trusted(host):
                message = f"host {host!r} is not in GRADUAL_TRUSTED_HOSTS"
                response = error_response(400, UntrustedHost.code, message, "host")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def trusted(self, host: str) -> bool:
        if host in self.hosts:
            return True
        return any(p.startswith("*.") and host.endswith(p[1:]) for p in self.hosts)


def host_name(header: str) -> str:
    """`Host` without its port; `[::1]:8000` → `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.split(":", 1)[0]


class NameGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not valid_name_in(_raw_path(scope)):
            protocol = _raw_path(scope).startswith(b"/v2/")
            response = (
                FastJSONResponse({"error": NAME_MESSAGE}, status_code=400)
                if protocol
                else error_response(422, "invalid_field", NAME_MESSAGE, "name")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def valid_name_in(raw_path: bytes) -> bool:
    """False when the path names a model and the name, percent-decoded once, is not valid."""
    for prefix in NAMED:
        if raw_path.startswith(prefix):
            segment = raw_path[len(prefix) :].split(b"/", 1)[0]
            return not segment or NAME.fullmatch(unquote_to_bytes(segment)) is not None
    return True


def _raw_path(scope: Scope) -> bytes:
    raw: bytes | None = scope.get("raw_path")
    return raw.split(b"?", 1)[0] if raw else scope["path"].encode()
