"""Changes through the model's Redis stream: the submitter of a replica in a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError

from service.errors import OutcomeLate, QueueFull, Unavailable
from service.kinds import RecordKind
from service.runtime.live import LiveModel, StreamGuard, Trained
from service.storage.wal import Arrays
from service.streaming import entries
from service.streaming.cluster import Cluster
from service.streaming.entries import Entry


class StreamSubmitter:
    """Each change is an entry of the model's stream; its owner (maybe this replica) applies
    it and publishes the outcome, which the waiting request receives."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.streams, self.channels = cluster.streams, cluster.channels
        self.settings = cluster.settings

    async def fit(
        self, live: LiveModel, arrays: Arrays, *, batch_id: str | None, wait: bool,
        guard: StreamGuard | None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        # (a stream's batches are independent entries: `guard` applies to one process only)
        future: asyncio.Future[Trained] | None = await self._submit(
            live, Entry("fit", {}, arrays, batch_id)
        )
        return future

    async def command(
        self, live: LiveModel, kind: RecordKind, args: dict[str, Any], arrays: Arrays
    ) -> Any:
        future = await self._submit(live, Entry(kind, args, arrays))
        return None if future is None else await future

    async def queued(self, live: LiveModel, position: int) -> int:
        return await self.streams.backlog(live.name)

    async def created(self, name: str) -> None:
        await self.channels.announce(name)

    async def deleted(self, name: str) -> None:
        await self.cluster.forget(name)

    async def _submit(self, live: LiveModel, entry: Entry) -> asyncio.Future[Any] | None:
        """Adds the entry to the model's stream; returns the future of its outcome, or None for
        a batch id seen before. Once this returns, the entry is durable in Redis."""
        try:
            return await self._add(live, entry)
        except RedisError as exc:  # nothing was acknowledged: the client may retry
            raise Unavailable(f"Redis is unreachable: {type(exc).__name__}") from exc

    async def _add(self, live: LiveModel, entry: Entry) -> asyncio.Future[Any] | None:
        if entry.kind == "fit":
            if entry.batch_id is not None and live.ledger.seen(entry.batch_id):
                return None
            if await self.streams.backlog(live.name) >= self.settings.stream_backlog:
                raise QueueFull(
                    f"the model's stream holds over {self.settings.stream_backlog} unread "
                    "batches; retry later", retry_after=self.settings.retry_after_s,
                )  # fmt: skip
        entry_id, fresh = await self.streams.add(
            live.name, entries.encode(entry), batch_id=entry.batch_id
        )
        if not fresh:
            return None
        self.cluster.wake.set()  # a model without an owner yet gets one sooner
        outcome = self.channels.outcomes.expect(live.name, entry_id)
        return asyncio.ensure_future(self._bounded(outcome))

    async def _bounded(self, outcome: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.stream_wait_s):
                return await outcome
        except TimeoutError:
            raise OutcomeLate(
                f"accepted, but not applied within {self.settings.stream_wait_s:g} s"
            ) from None
