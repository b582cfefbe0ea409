"""Changes through the model's Redis stream: the submitter of a replica in a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from service.kinds import RecordKind
from service.runtime.live import LiveModel, StreamGuard, Trained
from service.storage.wal import Arrays
from service.streaming.cluster import Cluster
from service.streaming.entries import Entry


class StreamSubmitter:
    """Each change is an entry of the model's stream; its owner (maybe this replica) applies
    it and publishes the outcome, which the waiting request receives."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def fit(
        self, live: LiveModel, arrays: Arrays, *, batch_id: str | None, wait: bool,
        guard: StreamGuard | None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        # (a stream's batches are independent entries: `guard` applies to one process only)
        future: asyncio.Future[Trained] | None = await self.cluster.submit(
            live, Entry("fit", {}, arrays, batch_id)
        )
        return future

    async def command(
        self, live: LiveModel, kind: RecordKind, args: dict[str, Any], arrays: Arrays
    ) -> Any:
        future = await self.cluster.submit(live, Entry(kind, args, arrays))
        return None if future is None else await future

    async def queued(self, live: LiveModel, position: int) -> int:
        return await self.cluster.backlog(live.name)

    async def created(self, name: str) -> None:
        await self.cluster.announce(name)

    async def deleted(self, name: str) -> None:
        await self.cluster.forget(name)
