"""Per-model Redis streams: idempotent adds, consumer-group reads, claims, acks, dead letters."""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.streaming.keys import GROUP, Keys

# XADD with producer-side de-duplication for Redis 7.0 (no `XADD IDMP` there): the key that
# remembers a batch id and the entry are written atomically, and a resend gets the first id.
ADD_ONCE = """
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return {1, id}
"""
BATCH_ID_TTL_S = 7 * 24 * 3600  # the owner's ledger still catches resends after this

Entries = list[tuple[str, dict[bytes, bytes]]]


class Streams:
    def __init__(self, redis: Redis, keys: Keys, *, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self._add_once = redis.register_script(ADD_ONCE)

    async def add(
        self, model: str, fields: dict[str, bytes], *, batch_id: str | None
    ) -> tuple[str, bool]:
        """Appends an entry; returns its id and whether it is new (False: a resent batch id)."""
        stream = self.keys.batches(model)
        if batch_id is None:
            entry_id = await self.redis.xadd(stream, cast(Any, fields))
            return _text(entry_id), True
        flat = [part for pair in fields.items() for part in pair]
        names = [stream, self.keys.batch_id(model, batch_id)]
        fresh, entry_id = await self._add_once(keys=names, args=[BATCH_ID_TTL_S, *flat])
        return _text(entry_id), bool(fresh)

    async def ensure_group(self, model: str) -> None:
        try:
            await self.redis.xgroup_create(self.keys.batches(model), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim_all(self, model: str) -> None:
        """Takes over every pending entry (a dead owner's included): this replica holds the
        lease and the generation, so no other consumer may still apply them."""
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.keys.batches(model), GROUP, self.consumer, min_idle_time=0,
                start_id=start, count=256,
            )  # fmt: skip
            start = _text(cast(Any, reply)[0])
            if start == "0-0":
                return

    async def deliveries(self, model: str, first: str, last: str) -> dict[str, int]:
        """How many times each pending entry in [first, last] was delivered."""
        rows: Any = await self.redis.xpending_range(
            self.keys.batches(model), GROUP, min=first, max=last, count=10_000,
            consumername=self.consumer,
        )  # fmt: skip
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def read(self, model: str, *, after: str | None, count: int, block_ms: int) -> Entries:
        """`after` None: new entries (waiting up to `block_ms`); else this consumer's pending
        entries after that id, without waiting."""
        stream = self.keys.batches(model)
        reply: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {stream: after or ">"}, count=count,
            block=None if after is not None else block_ms,
        )  # fmt: skip
        if not reply:
            return []
        return [(_text(entry_id), fields) for entry_id, fields in reply[0][1] if fields]

    async def ack(self, model: str, ids: list[str], *, through: str | None) -> None:
        """Acknowledges applied entries and trims what every snapshot already includes."""
        if ids:
            await self.redis.xack(self.keys.batches(model), GROUP, *ids)
        if through is not None:
            await self.redis.xtrim(self.keys.batches(model), minid=through, approximate=False)

    async def dead_letter(
        self, model: str, entry_id: str, fields: dict[bytes, bytes], reason: dict[str, Any]
    ) -> None:
        """Sets an entry aside with the reason, and acknowledges it, in one transaction."""
        letter = {**fields, b"source_id": entry_id.encode(), b"reason": orjson.dumps(reason)}
        async with self.redis.pipeline(transaction=True) as both:
            both.xadd(self.keys.dead_letters(model), cast(Any, letter))
            both.xack(self.keys.batches(model), GROUP, entry_id)
            await both.execute()

    async def backlog(self, model: str) -> int:
        """Entries not yet delivered to the owner (the group's lag)."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.batches(model))
        except ResponseError:  # no stream yet
            return 0
        for group in groups:
            if _text(group["name"]) == GROUP:
                return int(group.get("lag") or 0)
        return int(await self.redis.xlen(self.keys.batches(model)))

    async def remove(self, model: str) -> None:
        await self.redis.delete(self.keys.batches(model), self.keys.dead_letters(model))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
