"""Which batch ids a model has applied, so a retried batch is acknowledged, not trained twice.

An id is *applied* once its step succeeded (while its batch is still queued, the hub answers a
resend with that attempt's outcome instead). Applied ids are recorded in the database with the
next version checkpoint, whose weights hold their effect, and the ones not yet recorded travel
in every recovery snapshot; after a crash, replaying the log re-applies the rest. Memory holds
the newest `capacity` ids.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class BatchLedger:
    def __init__(
        self, capacity: int, recorded: Iterable[str] = (), unrecorded: Iterable[str] = ()
    ) -> None:
        self.capacity = capacity
        self._known: OrderedDict[str, None] = OrderedDict((batch_id, None) for batch_id in recorded)
        self._unrecorded: list[str] = list(unrecorded)
        self._known.update((batch_id, None) for batch_id in self._unrecorded)

    def seen(self, batch_id: str) -> bool:
        return batch_id in self._known

    def applied(self, batch_id: str) -> None:
        self._known[batch_id] = None
        self._unrecorded.append(batch_id)
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)
        if len(self._unrecorded) > self.capacity:  # a model that never checkpoints
            del self._unrecorded[: len(self._unrecorded) - self.capacity]

    def unrecorded(self) -> list[str]:
        """The ids applied since the last checkpoint, for the next one to record."""
        return list(self._unrecorded)

    def recorded(self, ids: list[str]) -> None:
        """The checkpoint holding `ids` committed."""
        self._unrecorded = self._unrecorded[len(ids) :]
