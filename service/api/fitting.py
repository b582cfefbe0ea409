"""Labelled rows from a request: one JSON batch, or an NDJSON stream of them.

NDJSON is read line by line as it arrives (never buffered whole); each line is validated and
queued while earlier lines train, and answered with one progress line per batch, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from models.spec import NetworkSpec
from service.config import Settings
from service.errors import (
    BatchSkipped,
    BodyTooLarge,
    GradualError,
    InvalidInput,
)
from service.runtime.batches import decode_json, matrix_from, targets_from
from service.runtime.hub import ModelHub
from service.runtime.live import LiveModel, StreamGuard, Trained

FIT_KEYS = {"inputs", "targets", "batch_id"}
MAX_BATCH_ID = 128


@dataclass(frozen=True)
class LabelledBatch:
    inputs: np.ndarray
    targets: np.ndarray
    batch_id: str | None


def labelled_batch(payload: Any, spec: NetworkSpec, settings: Settings) -> LabelledBatch:
    if not isinstance(payload, dict):
        raise InvalidInput("a batch must be a JSON object", field="body")
    payload = {k: v for k, v in payload.items() if not (k == "batch_id" and v is None)}
    unknown = sorted(set(payload) - FIT_KEYS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    inputs = matrix_from(
        payload.get("inputs"), field="inputs", features=spec.inputs,
        max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs,
    )  # fmt: skip
    targets = targets_from(
        payload.get("targets"), spec=spec, rows=inputs.shape[0], max_abs=settings.max_input_abs
    )
    return LabelledBatch(inputs, targets, batch_id_from(payload.get("batch_id")))


def batch_id_from(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput("batch_id must be a string or an integer", field="batch_id")
    text = str(value)
    if not 1 <= len(text) <= MAX_BATCH_ID or not text.isprintable():
        raise InvalidInput(
            f"batch_id must be 1 to {MAX_BATCH_ID} printable characters", field="batch_id"
        )
    return text


@dataclass
class StreamTally:
    lines: int = 0
    batches: int = 0
    trained: int = 0
    duplicates: int = 0
    skipped: int = 0
    errors: int = 0
    # In line order; a duplicate waits here as an already-finished future holding None.
    pending: deque[tuple[int, str | None, asyncio.Future[Trained | None]]] = field(
        default_factory=deque
    )


async def ndjson_fit(
    name: str, chunks: AsyncIterator[bytes], hub: ModelHub, settings: Settings, *, on_error: str
) -> AsyncIterator[bytes]:
    """Trains each line's batch as it arrives; yields one NDJSON line per batch, then a summary.

    With on_error=stop, the first bad line ends the stream: the lines before it stay applied,
    none after it is read or trained. With on_error=skip, bad lines are reported and skipped.
    """
    tally = StreamTally()
    guard = StreamGuard(stop_on_error=on_error == "stop")
    try:
        async for number, line in _numbered_lines(chunks, settings.max_body_bytes):
            for out in _ready(tally):
                yield out
            if guard.aborted:
                break
            tally.lines = number
            async for out in _take_line(name, number, line, hub, settings, tally, guard):
                yield out
    except BodyTooLarge as exc:
        yield _error_line(tally, tally.lines + 1, exc)
    async for out in _drain(tally, keep=0):
        yield out
    yield _line({"summary": _summary(tally, hub.live(name))})


async def _take_line(
    name: str, number: int, line: bytes, hub: ModelHub, settings: Settings, tally: StreamTally,
    guard: StreamGuard,
) -> AsyncIterator[bytes]:  # fmt: skip
    """Validates and queues one line (waiting, not refusing, when the queue is full)."""
    live = hub.live(name)
    try:
        batch = labelled_batch(decode_json(line), live.spec, settings)
        if live.pipeline.depth >= live.pipeline.capacity:
            async for out in _drain(tally, keep=live.pipeline.capacity // 2):
                yield out
        future = await hub.submit_fit(
            name, batch.inputs, batch.targets, batch_id=batch.batch_id, guard=guard
        )
    except GradualError as exc:
        async for out in _drain(tally, keep=0):
            yield out
        yield _error_line(tally, number, exc)
        guard.aborted = guard.stop_on_error
        return
    waiting: asyncio.Future[Trained | None]
    if future is None:  # answered in line order, after the batches before it
        waiting = asyncio.get_running_loop().create_future()
        waiting.set_result(None)
    else:
        waiting = asyncio.ensure_future(future)
    tally.pending.append((number, batch.batch_id, waiting))


def _summary(tally: StreamTally, live: LiveModel) -> dict[str, Any]:
    learner = live.learner
    return {
        "lines": tally.lines, "batches": tally.batches, "trained": tally.trained,
        "duplicates": tally.duplicates, "skipped": tally.skipped, "errors": tally.errors,
        "step": learner.head.step, "samples_seen": learner.head.samples_seen,
        "version": learner.served.version, "state": learner.control.state,
    }  # fmt: skip


def _ready(tally: StreamTally) -> list[bytes]:
    """Progress lines for the batches already finished at the head of the queue."""
    out = []
    while tally.pending and tally.pending[0][2].done():
        out.append(_settle(tally, *tally.pending.popleft()))
    return out


async def _drain(tally: StreamTally, *, keep: int) -> AsyncIterator[bytes]:
    while len(tally.pending) > keep:
        number, batch_id, future = tally.pending.popleft()
        await asyncio.wait([future])
        yield _settle(tally, number, batch_id, future)


def _settle(
    tally: StreamTally, number: int, batch_id: str | None, future: asyncio.Future[Trained | None]
) -> bytes:
    exc = future.exception()
    if isinstance(exc, BatchSkipped):
        tally.skipped += 1
        return _line({"line": number, "batch_id": batch_id, "skipped": True})
    if exc is not None:
        if not isinstance(exc, GradualError):
            raise exc
        return _error_line(tally, number, exc)
    done = future.result()
    if done is None:
        tally.duplicates += 1
        return _line({"line": number, "batch_id": batch_id, "duplicate": True})
    tally.batches += 1
    tally.trained += done.report.trained
    return _line(
        {
            "line": number, "batch_id": batch_id, "step": done.step,
            "samples_seen": done.samples_seen, "trained": done.report.trained,
            "train_loss": done.report.train_loss, "state": done.report.state,
            "version": done.version,
        }
    )  # fmt: skip


def _error_line(tally: StreamTally, number: int, exc: GradualError) -> bytes:
    tally.errors += 1
    error = {"code": exc.code, "message": exc.message, "field": exc.field}
    return _line({"line": number, "error": error})


async def _numbered_lines(
    chunks: AsyncIterator[bytes], max_line: int
) -> AsyncIterator[tuple[int, bytes]]:
    buffer = b""
    number = 0
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > max_line:
            raise BodyTooLarge(f"an NDJSON line exceeds {max_line} bytes")
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if buffer.strip():
        yield number + 1, buffer


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"
