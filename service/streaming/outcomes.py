"""What applying a stream entry gave, carried back to the replica whose request waits on it.

The owner publishes each outcome on a channel; pub/sub is at-most-once, so a waiter gives up
after a while (the entry is durable in the stream and will still apply). Outcomes that arrive
before their waiter registers are kept briefly, so a fast owner cannot outrun a slow reader.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import orjson

from service.errors import GradualError, QueueFull, Unavailable
from service.learning.control import LearnReport
from service.runtime.live import Trained

EARLY_KEPT = 4096


def message(model: str, entry_id: str, *, result: Any = None, error: Exception | None = None,
            duplicate: bool = False) -> bytes:  # fmt: skip
    body: dict[str, Any] = {"model": model, "entry": entry_id, "duplicate": duplicate}
    if isinstance(result, Trained):
        body["trained"] = asdict(result)
    elif result is not None:
        body["result"] = result
    if error is not None:
        body["error"] = _error(error)
    return orjson.dumps(body)


def _error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, GradualError):
        kinds = [cls.__name__ for cls in type(exc).__mro__ if issubclass(cls, GradualError)]
        return {"code": exc.code, "message": exc.message, "field": exc.field, "kinds": kinds}
    return {"code": "internal", "message": type(exc).__name__, "field": None, "kinds": []}


class Outcomes:
    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._early: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def expect(self, model: str, entry_id: str) -> asyncio.Future[Any]:
        key = (model, entry_id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if (body := self._early.pop(key, None)) is not None:
            self._settle(future, body)
        else:
            self._waiting[key] = future
            future.add_done_callback(lambda _: self._waiting.pop(key, None))
        return future

    def arrived(self, raw: bytes) -> None:
        body = orjson.loads(raw)
        key = (body["model"], body["entry"])
        future = self._waiting.pop(key, None)
        if future is None:
            self._early[key] = body
            while len(self._early) > EARLY_KEPT:
                self._early.popitem(last=False)
        elif not future.done():
            self._settle(future, body)

    def _settle(self, future: asyncio.Future[Any], body: dict[str, Any]) -> None:
        if (error := body.get("error")) is not None:
            future.set_exception(self._remote(error))
        elif body.get("duplicate"):
            future.set_result(None)
        elif (trained := body.get("trained")) is not None:
            report = LearnReport(**trained.pop("report"))
            future.set_result(Trained(report=report, **trained))
        else:
            future.set_result(body.get("result"))

    def _remote(self, error: dict[str, Any]) -> GradualError:
        """The owner's error as the same class here, so it maps to the same HTTP status."""
        known = _error_classes()
        cls = next((known[n] for n in error.get("kinds", []) if n in known), GradualError)
        exc = cls.__new__(cls)
        GradualError.__init__(exc, error["message"], field=error.get("field"))
        exc.code = error["code"]
        if isinstance(exc, QueueFull | Unavailable):
            exc.retry_after = 1.0
        return exc


def _error_classes() -> dict[str, type[GradualError]]:
    found: dict[str, type[GradualError]] = {}
    pending: list[type[GradualError]] = [GradualError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found
