"""The cluster's two pub/sub channels: entries' outcomes, and "re-read this model" changes.

Pub/sub is at-most-once: a waiter gives up after a while (its entry still applies), and every
replica re-reads the database every `sync_every_s` whatever it heard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.streaming.keys import Keys
from service.streaming.outcomes import Outcomes

log = logging.getLogger("gradual.cluster")


class Channels:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.outcomes = Outcomes()
        self._pubsub = redis.pubsub()

    async def announce(self, model: str) -> None:
        """Tells every replica to re-read `model` from the database now (best effort)."""
        with contextlib.suppress(RedisError):
            await self.redis.publish(self.keys.changes, orjson.dumps({"model": model}))

    async def outcome(self, message: bytes) -> None:
        await self.redis.publish(self.keys.outcomes, message)

    async def listen(self, changed: Callable[[], None], stopping: Callable[[], bool]) -> None:
        """Settles outcomes and calls `changed` on every change; after Redis went away,
        subscribes again (and calls `changed`: changes may have been missed)."""
        while not stopping():
            try:
                await self._pubsub.subscribe(self.keys.outcomes, self.keys.changes)
                async for note in self._pubsub.listen():
                    self._heard(note, changed)
            except (RedisError, OSError) as exc:
                log.warning("Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
                changed()

    def _heard(self, note: dict[str, Any], changed: Callable[[], None]) -> None:
        if note.get("type") != "message":
            return
        if note["channel"].decode() == self.keys.outcomes:
            self.outcomes.arrived(note["data"])
        else:
            changed()

    async def close(self) -> None:
        """Ends the subscription (and with it a listener whose cancel was lost)."""
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
