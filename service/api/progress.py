"""Training progress: live Server-Sent Events and downsampled learning curves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from service.api.access import READ
from service.api.deps import HubDep, NameParam
from service.api.schemas import MAX_EVENT_ID, History, HistoryMarker
from service.api.views import event_view
from service.runtime.hub import ModelHub
from service.storage.db.tables import EventRow

router = APIRouter(prefix="/v1/models/{name}", tags=["progress"], dependencies=READ)

KEEPALIVE_S = 15.0
MARKERS = ("checkpoint", "promote", "rollback", "early_stop", "drift", "resume", "stop")


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def event_stream(
    name: NameParam,
    hub: HubDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID)] = None,
    since: Annotated[
        int, Query(ge=0, le=MAX_EVENT_ID, description="Start after this event id.")
    ] = 0,
    max_events: Annotated[
        int | None, Query(ge=1, description="Close after this many events (tools and tests).")
    ] = None,
) -> StreamingResponse:
    """Every event as it happens; reconnecting with `Last-Event-ID` resumes after it."""
    hub.live(name)  # 404 before the stream starts
    start = last_event_id if last_event_id is not None else since
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _sse(hub, name, start, max_events), media_type="text/event-stream", headers=headers
    )


async def _sse(hub: ModelHub, name: str, after: int, limit: int | None) -> AsyncIterator[bytes]:
    sent = 0
    yield b"retry: 2000\n\n"
    with hub.listening(name):
        while limit is None or sent < limit:
            rows = await hub.events(name, after, limit=200)
            for row in rows:
                data = orjson.dumps(event_view(row).model_dump(mode="json"))
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (row.id, row.kind.encode(), data)
                after, sent = row.id, sent + 1
                if limit is not None and sent >= limit:
                    return
            if not rows:
                await hub.wait_for_events(name, KEEPALIVE_S)
                yield b": keep-alive\n\n"


@router.get("/history")
async def history(
    name: NameParam,
    hub: HubDep,
    points: Annotated[int, Query(ge=2, le=100_000, description="Downsample to this many.")] = 500,
) -> History:
    """Train and validation curves from the evaluation rounds, with event markers."""
    rounds = await hub.events(name, 0, kinds=["round"], limit=1_000_000)
    marks = await hub.events(name, 0, kinds=list(MARKERS), limit=100_000)
    curve = [dict(row.data) for row in _downsample(list(rounds), points)]
    markers = [_marker(row) for row in marks]
    return History(model=name, rounds=len(rounds), points=curve, markers=markers)


def _marker(row: EventRow) -> HistoryMarker:
    step, reason = row.data.get("step"), row.data.get("reason")
    return HistoryMarker(id=row.id, kind=row.kind, version=row.version, step=step, reason=reason)


def _downsample(items: list[EventRow], points: int) -> list[EventRow]:
    """Evenly spaced items, always keeping the first and the last."""
    if len(items) <= points:
        return items
    step = (len(items) - 1) / (points - 1)
    return [items[round(i * step)] for i in range(points)]
