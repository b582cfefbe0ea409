"""Predict and partial-fit answered before routing: pure ASGI, no per-request dependency
solving, no thread hop.

A `POST /v1/models/{name}/predict` or `/partial-fit` with a JSON or binary body and no query
string is answered here with the same checks and the same answer as the routes of
`service.api.models` (the access check, `service.api.answers`, the error table); the edge
(`service.api.edge`) has checked the host, origin, name and body limits already. Anything
else, NDJSON streams and query strings included, goes on to the routes. Metrics see the
route's own template.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.access import authorize
from service.api.answers import fit_answer, predict_answer
from service.api.edge import first_of_each
from service.api.errors import domain_error_response
from service.config import Settings
from service.errors import GradualError
from service.runtime.hub import ModelHub
from service.tokens import Scope as Granted

PREFIX = "/v1/models/"
ACTIONS = {"predict": Granted.READ, "partial-fit": Granted.WRITE}
NDJSON = "application/x-ndjson"


class DirectRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        name, action = target
        state = scope["app"].state
        hub: ModelHub = state.hub
        headers = first_of_each(scope["headers"])
        kind = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if kind == NDJSON or (hub.cluster is not None and not hub.has(name)):
            await self.app(scope, receive, send)  # a stream, or a model to discover first
            return
        scope["route"] = TEMPLATES[action]
        authorization = headers.get(b"authorization")
        try:
            body = await _body(receive)
        except ClientDisconnect:
            return
        response = await _answer(name, action, kind, body, hub, state.settings, authorization)
        await response(scope, receive, send)


@dataclass(frozen=True)
class RouteTemplate:
    """What the metrics read of the route a request took: its path template."""

    path: str


TEMPLATES = {action: RouteTemplate(f"{PREFIX}{{name}}/{action}") for action in ACTIONS}


def _target(scope: Scope) -> tuple[str, str] | None:
    """(name, action) for a request the direct path answers, else None."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
        return None
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    name, _, action = path[len(PREFIX) :].partition("/")
    if not name or action not in ACTIONS:
        return None
    return name, action


async def _answer(
    name: str, action: str, kind: str, body: bytes, hub: ModelHub, settings: Settings,
    authorization: bytes | None,
) -> ASGIApp:  # fmt: skip
    try:
        header = None if authorization is None else authorization.decode("latin-1")
        authorize(header, settings, ACTIONS[action])
        if action == "predict":
            return await predict_answer(name, kind, body, hub, settings, None)
        return await fit_answer(name, kind, body, hub, settings, wait=True, batch_id=None)
    except GradualError as exc:
        return domain_error_response(exc)


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
