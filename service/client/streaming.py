"""Stream bookkeeping shared by both clients: batch ids, look-ahead, the report."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

from service.client.results import FitResult, Queued, StreamReport

T = TypeVar("T")
Batch = tuple[Any, Any]  # (inputs, targets)


def batch_ids(given: Iterable[str] | None, prefix: str | None) -> Iterator[str]:
    """The caller's ids, or `prefix-0`, `prefix-1`, ...; a fresh random prefix by default.
    Resending a stream with the same prefix skips the batches the model has applied."""
    if given is not None:
        yield from given
        return
    stem = prefix or uuid.uuid4().hex[:12]
    for number in itertools.count():
        yield f"{stem}-{number}"


def next_id(ids: Iterator[str]) -> str:
    try:
        return next(ids)
    except StopIteration:
        raise ValueError("batch_ids ran out before the batches did") from None


def with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Each item, and whether it is the last one."""
    iterator = iter(items)
    try:
        held = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield held, False
        held = item
    yield held, True


async def with_last_async(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[tuple[T, bool]]:
    if not isinstance(items, AsyncIterable):
        for pair in with_last(items):
            yield pair
        return
    iterator = aiter(items)
    try:
        held = await anext(iterator)
    except StopAsyncIteration:
        return
    async for item in iterator:
        yield held, False
        held = item
    yield held, True


def record(report: StreamReport, batch_id: str, answer: FitResult | Queued) -> None:
    report.batches += 1
    report.batch_ids.append(batch_id)
    if isinstance(answer, FitResult):
        report.duplicates += answer.duplicate
        report.last = answer
