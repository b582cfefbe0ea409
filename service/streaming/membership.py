"""Which replicas are alive: each one's heartbeat in a Redis sorted set, scored by Redis' clock.

A member counts as alive while its last heartbeat is younger than the membership window
(one and a half leases). Replicas beat every third of the lease from a task of their own (a
slow tick does not delay it), so a Redis blip shorter than the lease never drops a member and
ownership does not move for it; a replica that dies drops out one window after its last beat.
A replica that stops gracefully leaves at once.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from service.streaming.keys import Keys

# Redis' own clock, so replicas on hosts whose clocks disagree still agree on who is alive.
BEAT = """
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], millis, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', millis - tonumber(ARGV[3]) * 10)
return millis
"""
ALIVE = """
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], millis - tonumber(ARGV[1]), '+inf')
"""


class Membership:
    def __init__(self, redis: Redis, keys: Keys, *, member: str, window_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.member = member
        self.window_ms = max(1, int(window_s * 1000))
        self._beat = redis.register_script(BEAT)
        self._alive = redis.register_script(ALIVE)

    async def beat(self, about: dict[str, object]) -> None:
        """Announces this replica (with what it tells others about itself) as alive now."""
        await self._beat(
            keys=[self.keys.members, self.keys.member_info],
            args=[self.member, orjson.dumps(about), self.window_ms],
        )

    async def alive(self) -> list[str]:
        found = await self._alive(keys=[self.keys.members], args=[self.window_ms])
        return sorted(_text(item) for item in found)

    async def info(self) -> dict[str, dict[str, object]]:
        raw = await self.redis.hgetall(self.keys.member_info)
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    async def leave(self) -> None:
        await self.redis.zrem(self.keys.members, self.member)
        await self.redis.hdel(self.keys.member_info, self.member)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
