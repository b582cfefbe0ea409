"""Model ownership: a Redis lease with a fencing token.

The lease is only an efficiency lock (one replica trains a model at a time); correctness
comes from the database, where the token becomes the model's generation and every write of
an owner compares it. The token counter only grows, so a newer owner always has a larger one.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.streaming.keys import Keys

ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# After Redis lost its data, its counter may be behind the database's generation.
CATCH_UP = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class Leases:
    def __init__(self, redis: Redis, keys: Keys, *, holder: str, ttl_s: float) -> None:
        self.keys = keys
        self.holder = holder
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._acquire = redis.register_script(ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)
        self._catch_up = redis.register_script(CATCH_UP)

    async def acquire(self, model: str) -> int | None:
        """The new fencing token, or None while another replica holds the lease."""
        fence = await self._acquire(
            keys=[self.keys.lease(model), self.keys.fence(model)], args=[self.holder, self.ttl_ms]
        )
        return int(fence) if fence is not None else None

    async def renew(self, model: str, fence: int) -> bool:
        value = self._value(fence)
        renewed = await self._renew(keys=[self.keys.lease(model)], args=[value, self.ttl_ms])
        return bool(renewed)

    async def release(self, model: str, fence: int) -> None:
        await self._release(keys=[self.keys.lease(model)], args=[self._value(fence)])

    async def catch_up(self, model: str, generation: int) -> None:
        await self._catch_up(keys=[self.keys.fence(model)], args=[generation])

    def _value(self, fence: int) -> str:
        return f"{self.holder}:{fence}"
