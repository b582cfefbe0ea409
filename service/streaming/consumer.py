"""An owner applying a model's stream: pending entries first (a dead owner's, claimed), then
new ones, in stream order, each through the same executor as the single-process log. Entries
its restored snapshot already includes are skipped; entries are acknowledged only once a
committed snapshot holds them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.asyncio import Redis

from service.config import Settings
from service.errors import Fenced, GradualError, Unavailable
from service.kinds import LABELLED_KINDS
from service.runtime.executor import Executor
from service.runtime.live import LiveModel
from service.streaming import entries, keys
from service.streaming.channels import Channels
from service.streaming.entries import Entry
from service.streaming.handoffs import Handoffs
from service.streaming.outcomes import message
from service.streaming.streams import Streams

log = logging.getLogger("gradual.cluster")

READ_COUNT = 64
REPLAYING = 2**62  # while catching up, every write may have committed before: look first


@dataclass
class Owned:
    """A model this replica owns: its fence, its consumer task, entries not yet acknowledged."""

    fence: int
    live: LiveModel
    task: asyncio.Task[None] | None = None
    unacked: list[str] = field(default_factory=list)
    applying: bool = False  # an entry is in hand: a handoff lets it finish
    leaving: asyncio.Task[None] | None = None  # the handoff under way
    handoff: dict[str, Any] | None = None  # taken over: the record to complete
    awaiting: tuple[bytes, float] | None = None  # filed with no entry: amend the first by then


class Consumer:
    def __init__(
        self, *, redis: Redis, streams: Streams, channels: Channels, handoffs: Handoffs,
        executor: Executor, settings: Settings,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.streams = streams
        self.channels = channels
        self.handoffs = handoffs
        self.executor = executor
        self.settings = settings

    async def consume(self, name: str, owned: Owned, stopping: Callable[[], bool]) -> None:
        """Applies the stream until stopping or handing over."""
        await self.streams.ensure_group(name)
        await self.streams.claim_all(name)
        recorder = owned.live.recorder
        recorder.replaying_through(REPLAYING)
        after: str | None = "0"
        while not stopping() and owned.leaving is None:
            batch = await self.streams.read(name, after=after, count=READ_COUNT, block_ms=1000)
            counts: dict[str, int] = {}
            if after is not None:
                if not batch:  # caught up: from here on nothing can have committed before
                    after = None
                    recorder.replaying_through(owned.live.seq)
                    await self._handed(owned, applied=False)
                    continue
                counts = await self.streams.deliveries(name, batch[0][0], batch[-1][0])
                after = batch[-1][0]
            for entry_id, fields in batch:
                if owned.leaving is not None:
                    break  # handed over: the rest stay pending for the new owner
                owned.applying = True
                try:
                    await self._apply(name, owned, entry_id, fields, counts.get(entry_id, 1))
                finally:
                    owned.applying = False
                await self._handed(owned, applied=True)
            await self.ack(name, owned)

    async def ack(self, name: str, owned: Owned) -> None:
        """Acknowledges (and trims) the entries the latest committed snapshot holds."""
        committed = owned.live.committed_through
        if committed is None:
            return
        done = [i for i in owned.unacked if keys.at_or_before(i, committed)]
        if done:
            owned.unacked = [i for i in owned.unacked if not keys.at_or_before(i, committed)]
            await self.streams.ack(name, done, through=committed)

    async def _apply(
        self, name: str, owned: Owned, entry_id: str, fields: dict[bytes, bytes],
        deliveries: int,
    ) -> None:  # fmt: skip
        live = owned.live
        if keys.at_or_before(entry_id, live.applied_through):
            owned.unacked.append(entry_id)  # the restored snapshot already includes it
            return
        try:
            entry = entries.decode(fields, live.spec, self.settings)
            if deliveries > 1:  # redelivered: count how often applying it began
                await self._count_attempt(name, entry_id)
        except GradualError as exc:
            await self._refuse(name, entry_id, fields, exc)
            return
        owned.unacked.append(entry_id)
        if entry.batch_id is not None and live.ledger.seen(entry.batch_id):
            await self.channels.outcome(message(name, entry_id, duplicate=True))
        else:
            await self._run(name, live, entry_id, entry, fields)
        if deliveries > 1:
            await self.redis.hdel(self.channels.keys.attempts(name), entry_id)

    async def _handed(self, owned: Owned, *, applied: bool) -> None:
        """Files the takeover's record once the first entry applied, or once caught up with
        none waiting; then the first entry within a lease still amends it."""
        if owned.handoff is not None:
            record, owned.handoff = owned.handoff, None
            filed = await self.handoffs.complete(record, applied=applied)
            if not applied:
                owned.awaiting = (filed, _now() + self.settings.lease_ttl_s)
        elif applied and owned.awaiting is not None:
            (filed, by), owned.awaiting = owned.awaiting, None
            if _now() <= by:
                await self.handoffs.first_entry(filed)

    async def _count_attempt(self, name: str, entry_id: str) -> None:
        """An entry whose application a replica's death interrupted `max_deliveries` times is
        set aside: it would otherwise kill every owner in turn. Deaths while applying other
        entries do not count against it, so a good batch is never dropped for them."""
        attempts = self.channels.keys.attempts(name)
        began = await self.redis.hincrby(attempts, entry_id, 1)
        if began > self.settings.max_deliveries:
            await self.redis.hdel(attempts, entry_id)
            raise Unavailable(f"a replica died while applying it {began - 1} times")

    async def _run(
        self, name: str, live: LiveModel, entry_id: str, entry: Entry,
        fields: dict[bytes, bytes],
    ) -> None:  # fmt: skip
        args = entry.args | ({"batch_id": entry.batch_id} if entry.kind == "fit" else {})
        record = live.next_record(entry.kind, args, entry.arrays, source=entry_id)
        snapshot_before = live.snapshot_seq
        run = partial(self.executor.run, live, record, wait=False)
        try:
            result = await live.pipeline.submit(run, batch=False)
        except Fenced:
            raise
        except Exception as exc:  # refused: the waiter hears why, bad batches are set aside
            if not isinstance(exc, GradualError):
                log.exception("model %s: entry %s failed", name, entry_id)
            if entry.kind in LABELLED_KINDS and isinstance(exc, GradualError):
                await self.streams.dead_letter(name, entry_id, fields, _reason(exc))
            await self.channels.outcome(message(name, entry_id, error=exc))
            return
        await self.channels.outcome(message(name, entry_id, result=result))
        if live.snapshot_seq != snapshot_before:
            await self.channels.announce(name)

    async def _refuse(
        self, name: str, entry_id: str, fields: dict[bytes, bytes], exc: GradualError
    ) -> None:
        await self.streams.dead_letter(name, entry_id, fields, _reason(exc))
        await self.channels.outcome(message(name, entry_id, error=exc))


def _now() -> float:
    return asyncio.get_running_loop().time()


def _reason(exc: GradualError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "field": exc.field}
