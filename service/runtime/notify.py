"""Wakes the readers of a model's event stream when its writer records an event.

Events are written by worker threads; readers wait on the event loop. A reader re-reads the
database after every wake-up (and after a timeout), so a missed wake-up costs latency, never
an event, and readers on other replicas still see everything, only later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterator


class Notifier:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._readers: Counter[int] = Counter()  # open event streams, per model

    def notify(self, model_id: int) -> None:
        """Callable from any thread. Waking the loop costs the writer a syscall and the GIL
        per event: only done while someone reads the model's events."""
        if self._readers[model_id]:
            self._loop.call_soon_threadsafe(self._events[model_id].set)

    @contextlib.contextmanager
    def listening(self, model_id: int) -> Iterator[None]:
        """Held by a reader for as long as it reads (from before its first database read)."""
        self._readers[model_id] += 1
        try:
            yield
        finally:
            self._readers[model_id] -= 1

    async def wait(self, model_id: int, timeout: float) -> None:
        event = self._events[model_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
