"""Redis key and channel names: one place, so producers and replicas agree.

Everything sits under a prefix (`GRADUAL_REDIS_PREFIX`, default `gradual`), so several
deployments (or test runs) can share one Redis: a model's stream is `gradual:{model}:batches`.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "gradual"  # the consumer group every replica reads a model's stream with


@dataclass(frozen=True)
class Keys:
    prefix: str = "gradual"

    @property
    def outcomes(self) -> str:
        """Pub/sub: what applying an entry gave, for whoever waits on it."""
        return f"{self.prefix}:outcomes"

    @property
    def changes(self) -> str:
        """Pub/sub: a model was created or deleted, or its committed state moved."""
        return f"{self.prefix}:changes"

    @property
    def members(self) -> str:
        """Sorted set: each live replica, scored by its last heartbeat (Redis milliseconds)."""
        return f"{self.prefix}:members"

    @property
    def member_info(self) -> str:
        """Hash: what each replica last said about itself (the models it owns)."""
        return f"{self.prefix}:members:info"

    @property
    def handoffs(self) -> str:
        """List: the latest handoffs, newest first (bounded)."""
        return f"{self.prefix}:handoffs"

    def handoff(self, model: str) -> str:
        """Hash: a handoff in progress, written by the old owner, completed by the new one."""
        return f"{self.prefix}:{model}:handoff"

    def batches(self, model: str) -> str:
        """The stream producers `XADD` mini-batches (and replicas commands) to."""
        return f"{self.prefix}:{model}:batches"

    def dead_letters(self, model: str) -> str:
        return f"{self.prefix}:{model}:dead"

    def attempts(self, model: str) -> str:
        """A hash: how often applying a redelivered entry began (a replica died in between)."""
        return f"{self.prefix}:{model}:attempts"

    def lease(self, model: str) -> str:
        return f"{self.prefix}:{model}:lease"

    def fence(self, model: str) -> str:
        return f"{self.prefix}:{model}:fence"

    def batch_id(self, model: str, key: str) -> str:
        return f"{self.prefix}:{model}:batch:{key}"


def id_order(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as text."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def at_or_before(entry_id: str, other: str | None) -> bool:
    return other is not None and id_order(entry_id) <= id_order(other)
