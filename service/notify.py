"""Wakes the readers of a model's event stream when its writer records an event.

Events are written by worker threads; readers wait on the event loop. A reader re-reads the
database after every wake-up (and after a timeout), so a missed wake-up costs latency, never
an event, and readers on other replicas still see everything, only later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class Notifier:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def notify(self, model_id: int) -> None:
        """Callable from any thread."""
        self._loop.call_soon_threadsafe(self._events[model_id].set)

    async def wait(self, model_id: int, timeout: float) -> None:
        event = self._events[model_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
