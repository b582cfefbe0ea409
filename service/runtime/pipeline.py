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
    _queue: asyncio.Queue[Job[Any]] = field(default_factory=asyncio.Queue)
    _pending: int = 0
    _worker: asyncio.Task[None] | None = None

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
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if batch:
            self._pending += 1
        self._queue.put_nowait(Job(work, future, batch))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return future

    async def run(self, work: Callable[[], T], *, batch: bool = False) -> T:
        return await self.submit(work, batch=batch)

    async def _run(self) -> None:
        while not self._queue.empty():
            job = self._queue.get_nowait()
            try:
                result = await to_thread.run_sync(job.work)
            except Exception as exc:  # handed to the waiter; the worker carries on
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                if job.counted:
                    self._pending -= 1

    async def close(self) -> None:
        """Finishes queued work (the step in progress included), then stops the worker."""
        if self._worker is not None:
            with contextlib.suppress(Exception):
                await self._worker
