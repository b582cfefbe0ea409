"""Where a model's changes go before its writer applies them: chosen once, in the lifespan.

`LocalLog` (one process): each change is appended to the model's write-ahead log, fsynced,
and queued to the model's pipeline. `service.streaming.submitter.StreamSubmitter` (several
replicas): each change is an entry of the model's Redis stream, applied by its owner. The hub
calls one `Submitter` and never asks which it has.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from anyio import to_thread

from service.kinds import RecordKind
from service.runtime.executor import Executor
from service.runtime.live import LiveModel, StreamGuard, Trained
from service.storage.guard import StorageGuard
from service.storage.wal import Arrays, ModelLog, Record


class Submitter(Protocol):
    async def fit(
        self, live: LiveModel, arrays: Arrays, *, batch_id: str | None, wait: bool,
        guard: StreamGuard | None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        """The batch's future once it is durable, or None for a batch id applied already."""
        ...

    async def command(
        self, live: LiveModel, kind: RecordKind, args: dict[str, Any], arrays: Arrays
    ) -> Any:
        """Makes the command durable, then waits for the model's writer to apply it."""
        ...

    async def queued(self, live: LiveModel, position: int) -> int:
        """A queued batch's place in line (`position`: the local queue's at acceptance)."""
        ...

    async def created(self, name: str) -> None: ...

    async def deleted(self, name: str) -> None: ...


class LocalLog:
    """Changes go to the model's write-ahead log, then its pipeline (one process)."""

    def __init__(self, executor: Executor, storage: StorageGuard) -> None:
        self.executor = executor
        self.storage = storage
        # The log's fsyncs run on threads of their own, not on the worker pool: a model's
        # training then keeps to one pool thread (and one malloc arena) instead of alternating
        # with the fsyncs, which grew the process by ~80 MB over a long stream.
        self.syncer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gradual-fsync")

    async def fit(
        self, live: LiveModel, arrays: Arrays, *, batch_id: str | None, wait: bool,
        guard: StreamGuard | None,
    ) -> asyncio.Future[Trained] | None:  # fmt: skip
        """A resend of a batch still queued gets the pending attempt's future: its answer is
        that attempt's outcome (a refusal included), never an early "duplicate"."""
        async with live.ingest:
            if batch_id is not None and (pending := live.inflight.get(batch_id)) is not None:
                return pending
            if batch_id is not None and live.ledger.seen(batch_id):
                return None
            live.pipeline.ensure_room()
            self.storage.check()  # a full or read-only disk: refused before anything is logged
            # Written from the loop (a buffered write, no thread hop); fsynced in a thread.
            with self.storage.writing("log", refusal=True):
                record = live.append("fit", {"batch_id": batch_id}, arrays, sync=False)
            run = partial(self.executor.run, live, record, guard=guard, wait=wait)
            # The batch trains while its record goes to disk; it is answered after both.
            synced = asyncio.ensure_future(self._sync(live, record.seq))
            trained = live.pipeline.submit(run, batch=True)
            future: asyncio.Future[Trained] = asyncio.ensure_future(_after(synced, trained))
            if not wait:
                await asyncio.shield(synced)  # a queued answer is still an acknowledgement
            if batch_id is not None:
                live.inflight[batch_id] = future
                future.add_done_callback(lambda _: live.inflight.pop(batch_id, None))
        return future

    async def command(
        self, live: LiveModel, kind: RecordKind, args: dict[str, Any], arrays: Arrays
    ) -> Any:
        async with live.ingest:
            record = await to_thread.run_sync(
                partial(self._append_synced, live, kind, args, arrays)
            )
            future = live.pipeline.submit(partial(self.executor.run, live, record), batch=False)
        return await future

    async def queued(self, live: LiveModel, position: int) -> int:
        return position

    async def created(self, name: str) -> None:
        return None

    async def deleted(self, name: str) -> None:
        return None

    def close(self) -> None:
        self.syncer.shutdown(wait=True)

    async def _sync(self, live: LiveModel, seq: int) -> None:
        if live.log is not None:
            await asyncio.get_running_loop().run_in_executor(
                self.syncer, self._sync_log, live.log, seq
            )

    def _sync_log(self, wal: ModelLog, seq: int) -> None:
        with self.storage.writing("log"):
            wal.sync(seq)

    def _append_synced(
        self, live: LiveModel, kind: RecordKind, args: dict[str, Any], arrays: Arrays
    ) -> Record:
        with self.storage.writing("log"):  # a failed sync: the record is logged, not refused
            return live.append(kind, args, arrays, sync=True)


async def _after(synced: asyncio.Future[None], trained: asyncio.Future[Trained]) -> Trained:
    """The batch's outcome, once its record is on disk too (acknowledged ⇒ durable)."""
    try:
        await synced
    except BaseException:
        trained.add_done_callback(consume)
        raise
    return await trained


def consume(future: asyncio.Future[Any]) -> None:
    """Marks an unawaited job's exception as seen (it is in the event log)."""
    if not future.cancelled():
        future.exception()
