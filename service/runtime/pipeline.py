"""Per-model write pipeline: a bounded FIFO of pending work run by one worker, off the loop.

Every change to a model (training batches, validation rows, control commands) goes through
its pipeline, so there is exactly one writer per model and work applies in arrival order.
While the worker trains on one batch in a thread, the event loop parses and validates the
next request. Batches count against `capacity`; when it is reached, `submit` refuses at once
(the HTTP layer answers 429) instead of letting memory grow. Control commands never count.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from anyio import to_thread

from service.errors import QueueFull

T = TypeVar("T")


@dataclass
class Job(Generic[T]):
    work: Callable[[], T]
    future: asyncio.Future[T]
    counted: bool


@dataclass
class Pipeline:
    capacity: int
    retry_after: float = 1.0
    _jobs: deque[Job[Any]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _draining: bool = False  # a worker thread is taking jobs (set and cleared under _lock)
    _pending: int = 0  # batches queued or running (read and changed on the event loop only)
    # The tasks awaiting a draining thread (held here: the loop keeps only weak references;
    # one may still be finishing when the next drain starts).
    _workers: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def depth(self) -> int:
        """Batches waiting or in progress."""
        return self._pending

    def ensure_room(self) -> None:
        """Refuses a batch with `QueueFull` when `capacity` batches are pending."""
        if self._pending >= self.capacity:
            raise QueueFull(
                f"the model's queue holds {self._pending} batches; retry later",
                retry_after=self.retry_after,
            )

    def submit(self, work: Callable[[], T], *, batch: bool) -> asyncio.Future[T]:
        """Queues `work`; batches beyond capacity are refused with `QueueFull`."""
        if batch:
            self.ensure_room()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if batch:
            self._pending += 1
        with self._lock:
            self._jobs.append(Job(work, future, batch))
            idle, self._draining = not self._draining, True
        if idle:
            worker = asyncio.ensure_future(to_thread.run_sync(self._drain, loop))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return future

    async def run(self, work: Callable[[], T], *, batch: bool = False) -> T:
        return await self.submit(work, batch=batch)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a worker thread: runs the jobs one after the other until none is left. The next
        job starts as soon as one ends, without waiting for a turn of the event loop (busy
        reading the next request); each outcome is handed to the loop."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job = self._jobs.popleft()
            outcome: tuple[Any, Exception | None]
            try:
                outcome = (job.work(), None)
            except Exception as exc:  # handed to the waiter; the worker carries on
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._settled, job, *outcome)

    def _settled(self, job: Job[Any], result: Any, exc: Exception | None) -> None:
        if job.counted:
            self._pending -= 1
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    async def close(self) -> None:
        """Finishes queued work (the step in progress included), then stops the worker."""
        while self._workers:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._workers)
            await asyncio.sleep(0)  # the outcomes handed over are settled first
