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
from functools import partial
from typing import Any

from anyio import to_thread
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.errors import Fenced
from service.runtime.executor import Executor
from service.runtime.metrics import Metrics
from service.runtime.models import LiveModels
from service.storage.db.tables import ModelRow
from service.streaming.channels import Channels
from service.streaming.consumer import Consumer, Owned
from service.streaming.handoffs import Handoffs
from service.streaming.keys import Keys
from service.streaming.lease import Leases
from service.streaming.membership import Membership
from service.streaming.rendezvous import balanced
from service.streaming.streams import Streams

log = logging.getLogger("gradual.cluster")

STARTUP_S = 0.5  # the first tick waits this long, so that co-starting replicas see each other


class Cluster:
    def __init__(
        self, models: LiveModels, redis: Redis, settings: Settings, *, executor: Executor,
        metrics: Metrics,
    ) -> None:  # fmt: skip
        self.models = models
        self.executor = executor
        self.metrics = metrics
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
        self.channels = Channels(redis, self.keys)
        self.consumer = Consumer(
            redis=redis, streams=self.streams, channels=self.channels, handoffs=self.handoffs,
            executor=executor, settings=settings,
        )  # fmt: skip
        self.members: list[str] = []
        self.assigned: dict[str, str] = {}  # each model's replica, as of the last tick
        self.owned: dict[str, Owned] = {}
        self.wake = asyncio.Event()  # set: tick now (a change, a new model, a failed owner)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        self.metrics.watch_owned(self.replica, lambda: len(self.owned))
        with contextlib.suppress(RedisError):  # known to the others before it takes anything
            await self.membership.beat({"owned": []})
        self._tasks = [
            asyncio.create_task(self.channels.listen(self.wake.set, lambda: self._stopping)),
            asyncio.create_task(self._steer()),
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
        self.wake.set()
        for task in self._tasks:
            task.cancel()
        for owned in self.owned.values():
            if owned.task is not None:
                owned.task.cancel()
        pending = [*self._tasks, *(o.task for o in self.owned.values() if o.task is not None)]
        await self.channels.close()
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
                await self.consumer.ack(name, owned)
                await self.handoffs.released(name)
                await self.leases.release(name, owned.fence)
                await self.channels.announce(
                    name
                )  # the new owner takes it now, not after the lease
                self.metrics.handoffs.labels("out").inc()
        self.owned.clear()

    async def view(self) -> tuple[list[tuple[str, list[str]]], list[dict[str, Any]]]:
        """The live members with the models each owns (as of its last beat), and the latest
        handoffs, newest first."""
        info = await self.membership.info()
        members = await self.membership.alive()
        owned = [(m, sorted(str(x) for x in _listed(info.get(m, {}), "owned"))) for m in members]
        return owned, await self.handoffs.latest()

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
        await self.channels.announce(name)

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
                    await self.wake.wait()
            self.wake.clear()

    async def _beat(self) -> None:
        """The heartbeat, on its own: a slow tick (loading many models) must not make this
        replica look dead to the others."""
        while not self._stopping:
            with contextlib.suppress(RedisError, OSError):  # a blip: the next beat is in time
                await self.membership.beat({"owned": self.training()})
            await asyncio.sleep(self.settings.lease_ttl_s / 3)

    async def _tick(self) -> None:
        rows = await to_thread.run_sync(self.models.registry.models)
        await self.models.refresh(rows, owned=set(self.owned))
        members = await self.membership.alive()
        self.members = members if self.replica in members else sorted([*members, self.replica])
        self.assigned = balanced([row.name for row in rows], self.members)
        for name, owned in list(self.owned.items()):
            await self._keep_or_hand_over(name, owned)
        wanted = [r for r in rows if self._assigned(r.name) and r.name not in self.owned]
        # together: a joiner restores its share at once, not one model after the other
        claims = [self._claim(row) for row in wanted if self.models.has(row.name)]
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
                await live.pipeline.run(partial(self.executor.snapshot, live, live.seq))
            await self.consumer.ack(name, owned)
            await self.handoffs.released(name)
        except (Fenced, RedisError, SQLAlchemyError, OSError) as exc:  # the lease lapses
            log.warning("model %s: handoff to %s incomplete (%s)", name, target, exc)
        finally:
            self.owned.pop(name, None)
            with contextlib.suppress(RedisError):
                await self.leases.release(name, owned.fence)
            await self.models.step_down(name, owned=self.owned)
            await self.channels.announce(name)
        self.metrics.handoffs.labels("out").inc()
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
        if not await to_thread.run_sync(self.models.registry.claim, model_id, fence):
            row = await to_thread.run_sync(self.models.registry.model, name)
            await self.leases.catch_up(name, row.generation)  # Redis lost its counter
            await self.leases.release(name, fence)
            return
        live = await self.models.take_over(name, fence)
        record = await self.handoffs.taken(name)
        owned = Owned(fence, live, handoff=record)
        if record.get("decided") is not None:
            self.metrics.handoff_seconds.observe(max(0.0, record["taken"] - record["decided"]))
        self.metrics.handoffs.labels("in").inc()
        owned.task = asyncio.create_task(self._consume(name, owned))
        self.owned[name] = owned
        log.info("replica %s owns %s (generation %d)", self.settings.replica_id, name, fence)

    async def _consume(self, name: str, owned: Owned) -> None:
        try:
            await self.consumer.consume(name, owned, lambda: self._stopping)
        finally:
            self.wake.set()  # a fenced or failed owner steps down at once

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
        await self.models.step_down(name, owned=self.owned)


def _listed(about: dict[str, object], key: str) -> list[object]:
    found = about.get(key)
    return found if isinstance(found, list) else []
