"""A model's history writes (version files and rows, events, pointer moves) applied in order
behind the answer, on one background thread per process.

Where the write-ahead log can re-derive them (a local log, one writer), a round's writes need
not hold up the batch's answer: the batch is durable in the log before it is acknowledged, and
replay writes again whatever a crash kept from the database. A version's file takes two fsyncs
and its row a commit: about 6 ms of a 12 ms call on the bench's disk, spent here instead.

Writes run in the order they were added. One that fails stops the queue (the writes after it
wait: a row must never land before the one it follows); the owner tries again with `flush`,
and the hub refuses a model's changes, before logging them, while its history cannot be
written. Readers of the history wait with `idle` until it has caught up.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("gradual.recorder")

# A write is called with `retried`: True when an earlier attempt of it failed, whose commit
# may have landed before the error (the write then looks before it writes again).
Write = Callable[[bool], None]

# Versions a model may have waiting before its writer waits for them: each holds a copy of the
# head's state (weights and optimizer), in device memory.
MAX_PENDING_VERSIONS = 8


class HistoryThread:
    """The one background thread that runs every model's queued writes, each queue in order."""

    def __init__(self, failed: Callable[[Exception], None] = lambda _exc: None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradual-history")
        self.failed = failed  # told of each failure (the storage guard: /readyz shows it)

    def submit(self, work: Callable[[], None]) -> None:
        self._pool.submit(work)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class WriteBehind:
    """One model's queue of history writes. Added to by the model's writer thread; run on the
    `HistoryThread`, or by `flush` on the caller's thread after a failure."""

    def __init__(self, thread: HistoryThread, name: str) -> None:
        self._thread = thread
        self._name = name
        self._changed = threading.Condition()
        self._writes: deque[tuple[Write, bool]] = deque()  # (write, holds a version)
        self._running = False  # a drain is under way (at most one at a time)
        self._retried = False  # the first write failed before
        self.failure: Exception | None = None  # why the first write failed (the queue waits)

    @property
    def pending(self) -> int:
        return len(self._writes)

    def add(self, write: Write, *, version: bool = False) -> None:
        """Queues `write`; with `version`, first waits while `MAX_PENDING_VERSIONS` versions
        are waiting (unless the queue has stopped on a failure: the hub then refuses changes)."""
        with self._changed:
            if version:
                self._changed.wait_for(self._room_for_a_version)
            self._writes.append((write, version))
            if self._running or self.failure is not None:
                return
            self._running = True
        self._thread.submit(self._drain)

    def idle(self, timeout: float | None = None) -> bool:
        """Waits until nothing is being written: all done, or stopped on a failure."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._running, timeout)

    def flush(self) -> None:
        """Returns once every queued write is done, running them here if they had stopped on a
        failure; raises the failure again if it persists."""
        with self._changed:
            self._changed.wait_for(lambda: not self._running)
            if not self._writes:
                return
            self._running = True
        self._drain()
        if self.failure is not None:
            raise self.failure

    def discard(self) -> int:
        """Drops what is queued (its model is being deleted); returns how many writes."""
        with self._changed:
            self._changed.wait_for(lambda: not self._running)
            dropped = len(self._writes)
            self._writes.clear()
            self.failure, self._retried = None, False
            self._changed.notify_all()
            return dropped

    def _room_for_a_version(self) -> bool:
        waiting = sum(1 for _, version in self._writes if version)
        return self.failure is not None or waiting < MAX_PENDING_VERSIONS

    def _drain(self) -> None:
        """Runs the queue's writes in order until it is empty or one fails."""
        while True:
            with self._changed:
                if not self._writes:
                    self._running = False
                    self._changed.notify_all()
                    return
                write, _ = self._writes[0]
                retried = self._retried
            try:
                write(retried)
            except Exception as exc:
                with self._changed:
                    self.failure, self._retried, self._running = exc, True, False
                    self._changed.notify_all()
                log.error("model %s: a history write failed; it waits: %s", self._name, exc)
                self._thread.failed(exc)
                return
            with self._changed:
                self._writes.popleft()
                self.failure, self._retried = None, False
                self._changed.notify_all()
