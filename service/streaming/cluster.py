"""One replica's part in a Redis-coordinated cluster.

Every replica: adds requests' changes to the models' streams and waits for their outcomes;
keeps each model it does not own in step with the database (its served version, from the
shared weight store); beats its heartbeat into the membership; and takes the lease of each
model that rendezvous hashing over the live members assigns to it. The owner of a model
claims the stream's pending entries, applies them in stream order (skipping those its restored
snapshot already includes), and acknowledges entries only once a committed snapshot holds them.
An owner whose model is now assigned elsewhere hands it over: it stops taking entries,
finishes the one in hand, commits a snapshot (and so `applied_through`), acknowledges, releases
the lease and tells the others, so the new owner takes it at once instead of after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from anyio import to_thread
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.errors import Fenced, GradualError, QueueFull, Unavailable
from service.kinds import LABELLED_KINDS
from service.runtime.live import LiveModel
from service.storage.db.tables import ModelRow
from service.streaming import entries, keys
from service.streaming.entries import Entry
from service.streaming.handoffs import Handoffs
from service.streaming.keys import Keys
from service.streaming.lease import Leases
from service.streaming.membership import Membership
from service.streaming.outcomes import Outcomes, message
from service.streaming.rendezvous import balanced
from service.streaming.streams import Streams

if TYPE_CHECKING:
    from service.runtime.hub import ModelHub

log = logging.getLogger("gradual.cluster")

READ_COUNT = 64
STARTUP_S = 0.5  # the first tick waits this long, so that co-starting replicas see each other
REPLAYING = 2**62  # while catching up, every write may have committed before: look first


class OutcomeLate(Unavailable):
    """The entry is durable in the stream and will apply; its outcome did not arrive in time."""

    code = "outcome_late"


@dataclass
class Owned:
    fence: int
    live: LiveModel
    task: asyncio.Task[None] | None = None
    unacked: list[str] = field(default_factory=list)
    applying: bool = False  # an entry is in hand: a handoff lets it finish
    leaving: asyncio.Task[None] | None = None  # the handoff under way
    handoff: dict[str, Any] | None = None  # taken over: the record to complete


class Cluster:
    def __init__(self, hub: ModelHub, redis: Redis, settings: Settings) -> None:
        self.hub = hub
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.streams = Streams(redis, self.keys, consumer=settings.replica_id)
        self.leases = Leases(
            redis, self.keys, holder=settings.replica_id, ttl_s=settings.lease_ttl_s
        )
        self.membership = Membership(
            redis, self.keys, member=settings.replica_id, window_s=1.5 * settings.lease_ttl_s
        )
        self.handoffs = Handoffs(redis, self.keys, replica=settings.replica_id)
        self.members: list[str] = []
        self.assigned: dict[str, str] = {}  # each model's replica, as of the last tick
        self.outcomes = Outcomes()
        self.owned: dict[str, Owned] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._pubsub: PubSub = redis.pubsub()
        self._tasks: list[asyncio.Task[None]] = []

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        self.hub.metrics.watch_owned(self.replica, lambda: len(self.owned))
        with contextlib.suppress(RedisError):  # known to the others before it takes anything
            await self.membership.beat({"owned": []})
        self._tasks = [
            asyncio.create_task(self._listen()), asyncio.create_task(self._steer()),
            asyncio.create_task(self._beat()),
        ]  # fmt: skip

    @property
    def replica(self) -> str:
        return self.settings.replica_id

    def training(self) -> list[str]:
        """The models this replica owns and is not handing over."""
        return sorted(name for name, owned in self.owned.items() if owned.leaving is None)

    async def stop_consuming(self) -> None:
        """First half of a graceful stop: no new entries; the hub then finishes and snapshots."""
        self._stopping = True  # a flag, not only cancel(): 3.11's timeouts can swallow a cancel
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for owned in self.owned.values():
            if owned.task is not None:
                owned.task.cancel()
        pending = [*self._tasks, *(o.task for o in self.owned.values() if o.task is not None)]
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # ends a lost-cancel listener
        await asyncio.gather(*pending, return_exceptions=True)
        handing = [o.leaving for o in self.owned.values() if o.leaving is not None]
        await asyncio.gather(*handing, return_exceptions=True)  # they finish, uncancelled
        await self._leave()

    async def _leave(self) -> None:
        """Out of the membership (the heartbeat has stopped): the others reassign its models,
        and take each as soon as `release` hands its lease back."""
        with contextlib.suppress(RedisError):
            await self.membership.leave()
            others = [m for m in await self.membership.alive() if m != self.replica]
            after = balanced(self.assigned, others)
            for name in list(self.owned):
                await self.handoffs.begin(name, after.get(name, ""), "stopping")

    async def release(self) -> None:
        """Second half: acknowledge what the final snapshots hold, and hand the leases back."""
        for name, owned in list(self.owned.items()):
            with contextlib.suppress(RedisError):
                await self._ack(name, owned)
                await self.handoffs.released(name)
                await self.leases.release(name, owned.fence)
                await self.announce(name)  # the new owner takes it now, not after the lease
                self.hub.metrics.handoffs.labels("out").inc()
        self.owned.clear()

    async def view(self) -> tuple[list[tuple[str, list[str]]], list[dict[str, Any]]]:
        """The live members with the models each owns (as of its last beat), and the latest
        handoffs, newest first."""
        info = await self.membership.info()
        members = await self.membership.alive()
        owned = [(m, sorted(str(x) for x in _listed(info.get(m, {}), "owned"))) for m in members]
        return owned, await self.handoffs.latest()

    # -- producing ------------------------------------------------------------------------

    async def submit(self, live: LiveModel, entry: Entry) -> asyncio.Future[Any] | None:
        """Adds the entry to the model's stream; returns the future of its outcome, or None for
        a batch id seen before. Once this returns, the entry is durable in Redis."""
        try:
            return await self._submit(live, entry)
        except RedisError as exc:  # nothing was acknowledged: the client may retry
            raise Unavailable(f"Redis is unreachable: {type(exc).__name__}") from exc

    async def _submit(self, live: LiveModel, entry: Entry) -> asyncio.Future[Any] | None:
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
        self._wake.set()  # a model without an owner yet gets one sooner
        outcome = self.outcomes.expect(live.name, entry_id)
        return asyncio.ensure_future(self._bounded(outcome))

    async def _bounded(self, outcome: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.stream_wait_s):
                return await outcome
        except TimeoutError:
            raise OutcomeLate(
                f"accepted, but not applied within {self.settings.stream_wait_s:g} s"
            ) from None

    async def backlog(self, name: str) -> int:
        return await self.streams.backlog(name)

    async def forget(self, name: str) -> None:
        """A deleted model: stop owning it, drop its stream, tell the other replicas."""
        owned = self.owned.pop(name, None)
        if owned is not None and owned.task is not None:
            owned.task.cancel()
            await asyncio.gather(owned.task, return_exceptions=True)
        with contextlib.suppress(RedisError):  # a lease lapses, a stream can go later
            if owned is not None:
                await self.leases.release(name, owned.fence)
            await self.streams.remove(name)
        await self.announce(name)

    async def announce(self, model: str) -> None:
        """Tells every replica to re-read `model` from the database now (best effort: they
        also re-read it every `sync_every_s`)."""
        with contextlib.suppress(RedisError):
            await self.redis.publish(self.keys.changes, orjson.dumps({"model": model}))

    # -- keeping in step ------------------------------------------------------------------

    async def _listen(self) -> None:
        """Follows outcomes and changes; after Redis went away, subscribes again."""
        while not self._stopping:
            try:
                await self._pubsub.subscribe(self.keys.outcomes, self.keys.changes)
                async for note in self._pubsub.listen():
                    self._heard(note)
            except (RedisError, OSError) as exc:
                log.warning("Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self._wake.set()  # missed changes: re-read the database

    def _heard(self, note: dict[str, Any]) -> None:
        if note.get("type") != "message":
            return
        if note["channel"].decode() == self.keys.outcomes:
            self.outcomes.arrived(note["data"])
        else:
            self._wake.set()

    async def _steer(self) -> None:
        period = min(self.settings.lease_ttl_s / 3, self.settings.sync_every_s)
        # replicas starting together: all are members (they beat at start) before one takes
        await asyncio.sleep(min(period, STARTUP_S))
        while not self._stopping:
            try:
                await self._tick()
            except (RedisError, SQLAlchemyError, OSError) as exc:  # retried next period
                log.warning("cluster tick failed: %s", exc)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can eat a cancel
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()

    async def _beat(self) -> None:
        """The heartbeat, on its own: a slow tick (loading many models) must not make this
        replica look dead to the others."""
        while not self._stopping:
            with contextlib.suppress(RedisError, OSError):  # a blip: the next beat is in time
                await self.membership.beat({"owned": self.training()})
            await asyncio.sleep(self.settings.lease_ttl_s / 3)

    async def _tick(self) -> None:
        rows = await to_thread.run_sync(self.hub.registry.models)
        await self.hub.refresh(rows, owned=set(self.owned))
        members = await self.membership.alive()
        self.members = members if self.replica in members else sorted([*members, self.replica])
        self.assigned = balanced([row.name for row in rows], self.members)
        for name, owned in list(self.owned.items()):
            await self._keep_or_hand_over(name, owned)
        wanted = [r for r in rows if self._assigned(r.name) and r.name not in self.owned]
        # together: a joiner restores its share at once, not one model after the other
        claims = [self._claim(row) for row in wanted if self.hub.has(row.name)]
        for failed in await asyncio.gather(*claims, return_exceptions=True):
            if isinstance(failed, BaseException):
                raise failed

    async def _claim(self, row: ModelRow) -> None:
        fence = await self.leases.acquire(row.name)
        if fence is not None:
            await self._take(row.name, row.id, fence)

    def _assigned(self, name: str) -> bool:
        return self.assigned.get(name, self.replica) == self.replica

    async def _keep_or_hand_over(self, name: str, owned: Owned) -> None:
        renewed = await self.leases.renew(name, owned.fence)
        if owned.leaving is not None:
            return  # renewed until the handoff releases it
        alive = owned.task is not None and not owned.task.done()
        if not alive or not renewed:
            await self._step_down(name)
        elif not self._assigned(name):
            target = self.assigned[name]
            owned.leaving = asyncio.create_task(self._hand_over(name, owned, target))

    async def _hand_over(self, name: str, owned: Owned, target: str) -> None:
        """Gracefully: the entry in hand finishes, a snapshot commits what was applied, the
        lease goes back, and the others hear of it at once."""
        began = asyncio.get_running_loop().time()
        try:
            await self.handoffs.begin(name, target, "rebalance")
            await self._stop_taking(owned)
            live = owned.live
            if live.seq != live.snapshot_seq or live.applied_through != live.committed_through:
                await live.pipeline.run(partial(self.hub.executor.snapshot, live, live.seq))
            await self._ack(name, owned)
            await self.handoffs.released(name)
        except (Fenced, RedisError, SQLAlchemyError, OSError) as exc:  # the lease lapses
            log.warning("model %s: handoff to %s incomplete (%s)", name, target, exc)
        finally:
            self.owned.pop(name, None)
            with contextlib.suppress(RedisError):
                await self.leases.release(name, owned.fence)
            await self.hub.step_down(name)
            await self.announce(name)
        self.hub.metrics.handoffs.labels("out").inc()
        took = asyncio.get_running_loop().time() - began
        log.info("replica %s handed %s to %s in %.3f s", self.replica, name, target, took)

    async def _stop_taking(self, owned: Owned) -> None:
        """The consumer stops after the entry in hand; waiting on the stream, it just stops."""
        task = owned.task
        if task is None:
            return
        owned.task = None
        if not owned.applying:
            task.cancel()
        (ended,) = await asyncio.gather(task, return_exceptions=True)
        if isinstance(ended, Fenced):
            raise ended

    async def _take(self, name: str, model_id: int, fence: int) -> None:
        if not await to_thread.run_sync(self.hub.registry.claim, model_id, fence):
            row = await to_thread.run_sync(self.hub.registry.model, name)
            await self.leases.catch_up(name, row.generation)  # Redis lost its counter
            await self.leases.release(name, fence)
            return
        live = await self.hub.take_over(name, fence)
        record = await self.handoffs.taken(name)
        owned = Owned(fence, live, handoff=record)
        if record.get("decided") is not None:
            self.hub.metrics.handoff_seconds.observe(max(0.0, record["taken"] - record["decided"]))
        self.hub.metrics.handoffs.labels("in").inc()
        owned.task = asyncio.create_task(self._consume(name, owned))
        self.owned[name] = owned
        log.info("replica %s owns %s (generation %d)", self.settings.replica_id, name, fence)

    async def _step_down(self, name: str) -> None:
        owned = self.owned.pop(name)
        if owned.task is not None:
            owned.task.cancel()
            (ended,) = await asyncio.gather(owned.task, return_exceptions=True)
            if isinstance(ended, Exception) and not isinstance(ended, Fenced):
                log.error("model %s: consuming failed", name, exc_info=ended)
        with contextlib.suppress(RedisError):
            await self.leases.release(name, owned.fence)
        log.warning("replica %s no longer owns %s", self.settings.replica_id, name)
        await self.hub.step_down(name)

    # -- owning ---------------------------------------------------------------------------

    async def _consume(self, name: str, owned: Owned) -> None:
        """Applies the stream: first the pending entries (a dead owner's, claimed), then new."""
        try:
            await self.streams.ensure_group(name)
            await self.streams.claim_all(name)
            recorder = owned.live.recorder
            recorder.replaying_through(REPLAYING)
            after: str | None = "0"
            while not self._stopping and owned.leaving is None:
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
                await self._ack(name, owned)
        finally:
            self._wake.set()  # a fenced or failed owner steps down at once

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
            await self.redis.publish(self.keys.outcomes, message(name, entry_id, duplicate=True))
        else:
            await self._run(name, live, entry_id, entry, fields)
        if deliveries > 1:
            await self.redis.hdel(self.keys.attempts(name), entry_id)

    async def _handed(self, owned: Owned, *, applied: bool) -> None:
        """Files the takeover's record once the first entry applied (or none was waiting)."""
        if owned.handoff is not None:
            record, owned.handoff = owned.handoff, None
            await self.handoffs.complete(record, applied=applied)

    async def _count_attempt(self, name: str, entry_id: str) -> None:
        """An entry whose application a replica's death interrupted `max_deliveries` times is
        set aside: it would otherwise kill every owner in turn. Deaths while applying other
        entries do not count against it, so a good batch is never dropped for them."""
        began = await self.redis.hincrby(self.keys.attempts(name), entry_id, 1)
        if began > self.settings.max_deliveries:
            await self.redis.hdel(self.keys.attempts(name), entry_id)
            raise Unavailable(f"a replica died while applying it {began - 1} times")

    async def _run(
        self, name: str, live: LiveModel, entry_id: str, entry: Entry,
        fields: dict[bytes, bytes],
    ) -> None:  # fmt: skip
        args = entry.args | ({"batch_id": entry.batch_id} if entry.kind == "fit" else {})
        record = live.next_record(entry.kind, args, entry.arrays, source=entry_id)
        snapshot_before = live.snapshot_seq
        run = partial(self.hub.executor.run, live, record, wait=False)
        try:
            result = await live.pipeline.submit(run, batch=False)
        except Fenced:
            raise
        except Exception as exc:  # refused: the waiter hears why, bad batches are set aside
            if not isinstance(exc, GradualError):
                log.exception("model %s: entry %s failed", name, entry_id)
            if entry.kind in LABELLED_KINDS and isinstance(exc, GradualError):
                await self.streams.dead_letter(name, entry_id, fields, _reason(exc))
            await self.redis.publish(self.keys.outcomes, message(name, entry_id, error=exc))
            return
        await self.redis.publish(self.keys.outcomes, message(name, entry_id, result=result))
        if live.snapshot_seq != snapshot_before:
            await self.announce(name)

    async def _refuse(
        self, name: str, entry_id: str, fields: dict[bytes, bytes], exc: GradualError
    ) -> None:
        await self.streams.dead_letter(name, entry_id, fields, _reason(exc))
        await self.redis.publish(self.keys.outcomes, message(name, entry_id, error=exc))

    async def _ack(self, name: str, owned: Owned) -> None:
        committed = owned.live.committed_through
        if committed is None:
            return
        done = [i for i in owned.unacked if keys.at_or_before(i, committed)]
        if done:
            owned.unacked = [i for i in owned.unacked if not keys.at_or_before(i, committed)]
            await self.streams.ack(name, done, through=committed)


def _listed(about: dict[str, object], key: str) -> list[object]:
    found = about.get(key)
    return found if isinstance(found, list) else []


def _reason(exc: GradualError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "field": exc.field}
