"""A record of each handoff: begun by the old owner, completed by the new one, kept in Redis.

The old owner writes when it decided and when it released the lease; the new owner adds when
it took the model and when it applied its first entry, then files the whole record in a
bounded list that `GET /v1/cluster` shows. Times are the replicas' wall clocks (seconds).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from service.streaming.keys import Keys

KEPT = 50  # handoffs listed
# Replaces one filed record by its amended copy, wherever other replicas' records moved it.
AMEND = """
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if item == ARGV[1] then redis.call('LSET', KEYS[1], i - 1, ARGV[2]) return 1 end
end
return 0
"""
PENDING_TTL_S = 600  # a begun handoff nobody completes (its model deleted) goes by itself


class Handoffs:
    def __init__(self, redis: Redis, keys: Keys, *, replica: str) -> None:
        self.redis = redis
        self.keys = keys
        self.replica = replica

    async def begin(self, model: str, target: str, reason: str) -> float:
        decided = time.time()
        fields = {"model": model, "source": self.replica, "target": target, "reason": reason}
        await self._write(model, fields | {"decided": decided})
        return decided

    async def released(self, model: str) -> None:
        await self._write(model, {"released": time.time()})

    async def taken(self, model: str) -> dict[str, Any]:
        """The pending record (the old owner's half), or a fresh one: reason `vacant` when
        nobody held the lease (a new model, or a dead owner's lease that lapsed)."""
        raw = await self.redis.get(self.keys.handoff(model))
        await self.redis.delete(self.keys.handoff(model))
        begun: dict[str, Any] = orjson.loads(raw) if raw else {"model": model, "reason": "vacant"}
        return begun | {"owner": self.replica, "taken": time.time()}

    async def complete(self, record: dict[str, Any], *, applied: bool) -> bytes:
        """Files the record; returns it as filed (for `first_entry` to amend)."""
        record = _with_first_entry(record, applied)
        decided = record.get("decided")
        if decided is not None:
            record["takeover_s"] = round(record["taken"] - decided, 4)
        filed = orjson.dumps(record)
        await self.redis.lpush(self.keys.handoffs, filed)
        await self.redis.ltrim(self.keys.handoffs, 0, KEPT - 1)
        return filed

    async def first_entry(self, filed: bytes) -> None:
        """The new owner applied its first entry after the record was filed (nothing was
        waiting at the takeover): the record gains the time."""
        amended = orjson.dumps(_with_first_entry(orjson.loads(filed), True))
        await self.redis.eval(AMEND, 1, self.keys.handoffs, filed, amended)

    async def latest(self, count: int = KEPT) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.keys.handoffs, 0, count - 1)
        return [orjson.loads(item) for item in raw]

    async def _write(self, model: str, fields: dict[str, Any]) -> None:
        key = self.keys.handoff(model)
        current = await self.redis.get(key)
        merged = (orjson.loads(current) if current else {}) | fields
        await self.redis.set(key, orjson.dumps(merged), ex=PENDING_TTL_S)


def _with_first_entry(record: dict[str, Any], applied: bool) -> dict[str, Any]:
    record = record | {"first_entry": time.time() if applied else None}
    if applied and record.get("decided") is not None:
        record["first_entry_s"] = round(record["first_entry"] - record["decided"], 4)
    return record
