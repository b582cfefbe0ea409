"""Predict micro-batching: concurrent requests for one served version share a forward pass.

Each request's rows wait in a lane (one per key and `ServedModel`); a batch takes the oldest
requests up to `max_batch` rows, one forward pass runs in a worker thread, and each request
gets its own slice of the outputs. Lanes never mix, so two versions never share a batch.

When a batch leaves depends on `adaptive`:

- adaptive (the default): a request that finds its lane idle runs its forward pass at once,
  in its own task, so a lone client never waits for company. While a forward runs, requests
  gather; when it ends they leave together. A second forward may start meanwhile (up to
  `max_concurrent`) once a batch is full or its oldest request has waited `max_wait_s`.
- fixed window: the first request of a batch waits `max_wait_s` for company, or until the
  batch is full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from anyio import to_thread

from service.learning.served import ServedModel

BatchHook = Callable[[Hashable, int, int], None]  # (key, rows, requests) per forward pass
_LaneKey = tuple[Hashable, int, torch.dtype, torch.device]


@dataclass
class _Request:
    rows: torch.Tensor
    future: asyncio.Future[torch.Tensor]
    arrived: float


@dataclass
class _Lane:
    key: Hashable
    served: ServedModel
    lane_key: _LaneKey
    pending: deque[_Request] = field(default_factory=deque)
    pending_rows: int = 0
    running: int = 0
    timer: asyncio.TimerHandle | None = None
    kicked: bool = False

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running and self.timer is None and not self.kicked


@dataclass
class BatchStats:
    """Totals since start: forward passes, rows and requests they carried, largest batch."""

    batches: int = 0
    rows: int = 0
    requests: int = 0
    largest: int = 0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    def record(self, rows: int, requests: int) -> None:
        self.batches += 1
        self.rows += rows
        self.requests += requests
        self.largest = max(self.largest, rows)


class MicroBatcher:
    """Coalesces concurrent predict requests per served version into shared forward passes.

    >>> import asyncio, torch
    >>> from models.spec import NetworkSpec
    >>> from models.network import build_network
    >>> spec = NetworkSpec(task="regression", inputs=2, outputs=1)
    >>> served = ServedModel(1, build_network(spec, seed=0))
    >>> async def two() -> list[torch.Tensor]:
    ...     batcher = MicroBatcher()
    ...     rows = [torch.ones(1, 2), torch.zeros(3, 2)]
    ...     return await asyncio.gather(*(batcher.submit("m", served, r) for r in rows))
    >>> [tuple(out.shape) for out in asyncio.run(two())]
    [(1, 1), (3, 1)]
    """

    def __init__(
        self, *, max_batch: int = 64, max_wait_s: float = 0.002, adaptive: bool = True,
        max_concurrent: int = 1, on_batch: BatchHook | None = None,
    ) -> None:  # fmt: skip
        if max_batch < 1 or max_concurrent < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_concurrent must be ≥ 1, max_wait_s ≥ 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.adaptive = adaptive
        self.max_concurrent = max_concurrent
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._lanes: dict[_LaneKey, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, served: ServedModel, rows: torch.Tensor) -> torch.Tensor:
        """The raw outputs of `served` for `rows` (N, inputs), computed along with other
        requests for the same key and the same `served` object."""
        if rows.ndim != 2 or rows.shape[1] != served.spec.inputs:
            raise ValueError(f"rows must have shape (N, {served.spec.inputs})")
        loop = asyncio.get_running_loop()
        lane = self._lane(key, served, rows)
        future: asyncio.Future[torch.Tensor] = loop.create_future()
        lane.pending.append(_Request(rows, future, loop.time()))
        lane.pending_rows += rows.shape[0]
        if self.adaptive and lane.running == 0 and len(lane.pending) == 1:
            # Alone on an idle lane: run the forward pass in this request's own task (no
            # extra task, no extra turn of the loop); others arriving meanwhile gather.
            await self._forward(lane, self._started(lane, self._take(lane)))
            return future.result()
        if not lane.kicked:  # let requests of this same loop turn join before deciding
            lane.kicked = True
            loop.call_soon(self._kick, lane)
        return await future

    async def close(self) -> None:
        """Waits for the forward passes in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- scheduling -----------------------------------------------------------------------

    def _lane(self, key: Hashable, served: ServedModel, rows: torch.Tensor) -> _Lane:
        # id(served) is unique while the lane holds `served`; the lane goes once it is idle.
        lane_key = (key, id(served), rows.dtype, rows.device)
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane(key, served, lane_key)
        return lane

    def _kick(self, lane: _Lane) -> None:
        lane.kicked = False
        self._pump(lane)

    def _pump(self, lane: _Lane) -> None:
        """Starts every batch that may leave now; arms a timer for the next one that will."""
        while lane.pending and lane.running < self.max_concurrent and self._may_leave(lane):
            self._start(lane, self._take(lane))
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if lane.pending and lane.running < self.max_concurrent:
            delay = lane.pending[0].arrived + self.max_wait_s - asyncio.get_running_loop().time()
            lane.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._expire, lane)
        if lane.idle and self._lanes.get(lane.lane_key) is lane:
            del self._lanes[lane.lane_key]

    def _may_leave(self, lane: _Lane) -> bool:
        if self.adaptive and lane.running == 0:
            return True
        if lane.pending_rows >= self.max_batch:
            return True
        waited = asyncio.get_running_loop().time() - lane.pending[0].arrived
        return waited >= self.max_wait_s

    def _expire(self, lane: _Lane) -> None:
        lane.timer = None
        self._pump(lane)

    def _take(self, lane: _Lane) -> list[_Request]:
        """The oldest requests up to `max_batch` rows (at least one); cancelled ones dropped."""
        batch: list[_Request] = []
        rows = 0
        while lane.pending:
            request = lane.pending[0]
            size = request.rows.shape[0]
            if batch and rows + size > self.max_batch:
                break
            lane.pending.popleft()
            lane.pending_rows -= size
            if not request.future.done():
                batch.append(request)
                rows += size
        return batch

    def _start(self, lane: _Lane, batch: list[_Request]) -> None:
        if not batch:
            return
        task = asyncio.create_task(self._forward(lane, self._started(lane, batch)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _started(self, lane: _Lane, batch: list[_Request]) -> list[_Request]:
        """Counts a forward pass as running (and in the stats) from the moment it is due."""
        lane.running += 1
        rows = sum(request.rows.shape[0] for request in batch)
        self.stats.record(rows, len(batch))
        if self.on_batch is not None:
            self.on_batch(lane.key, rows, len(batch))
        return batch

    # -- the forward pass -----------------------------------------------------------------

    async def _forward(self, lane: _Lane, batch: list[_Request]) -> None:
        try:
            outputs = await to_thread.run_sync(_outputs, lane.served, [r.rows for r in batch])
        except asyncio.CancelledError:
            for request in batch:
                request.future.cancel()
            raise
        except Exception as exc:  # every request of the batch gets the error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
        else:
            _scatter(batch, outputs)
        finally:
            lane.running -= 1
            self._pump(lane)


def _scatter(batch: list[_Request], outputs: torch.Tensor) -> None:
    start = 0
    for request in batch:
        stop = start + request.rows.shape[0]
        if not request.future.done():
            request.future.set_result(outputs[start:stop])
        start = stop


def _outputs(served: ServedModel, rows: list[torch.Tensor]) -> torch.Tensor:
    """One forward pass over the requests' rows, stacked (run in a worker thread)."""
    inputs = rows[0] if len(rows) == 1 else torch.cat(rows)
    return served.outputs(inputs)
