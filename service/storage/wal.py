"""The write-ahead log: every change to a model, appended and fsynced before it is acknowledged.

One log per model, in segments `wal/m<model id>/<first seq>.wal`. A record is
`b"GWAL" | u32 length | u32 crc32 | payload`, the payload a safetensors blob (arrays as tensors,
the rest as JSON in its header; nothing is pickled). On start, every record after the last
checkpoint's `applied_seq` is replayed in order. A torn record at the tail (a crash mid-write,
never acknowledged) is cut off. Segments wholly covered by a checkpoint are deleted.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from service import crashpoints

MAGIC = b"GWAL"
HEADER = struct.Struct("<4sII")
SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str  # "fit", "validation", or a command: "stop", "resume", "training", ...
    args: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    source: str | None = None  # scale-out: the Redis stream entry this record came from


def encode(record: Record) -> bytes:
    meta = {"seq": record.seq, "kind": record.kind, "args": record.args}
    payload = bytes(save_arrays(record.arrays, metadata={"record": json.dumps(meta)}))
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> Record:
    (length,) = struct.unpack("<Q", payload[:8])
    meta = json.loads(json.loads(payload[8 : 8 + length])["__metadata__"]["record"])
    return Record(meta["seq"], meta["kind"], meta["args"], dict(load_arrays(payload)))


class ModelLog:
    """One model's log. Appends come from request threads, truncation from the model's worker:
    one lock makes each an atomic step, so truncation never removes a record being added.

    Group commit: `write` appends without waiting for the disk, and `sync(seq)` returns once
    every record through `seq` is on it. One fsync runs at a time and covers every record
    written before it started, so records appended while the previous fsync ran share the
    next one; a caller acknowledges a record only after its `sync`."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fsync at a time
        directory.mkdir(parents=True, exist_ok=True)
        # A segment is named after the first seq it holds: an empty tail left by a truncation
        # still says where numbering goes on (seqs must keep rising past the snapshot's).
        segments = self._segments()
        self.last_seq = int(segments[-1].stem) - 1 if segments else 0
        for record in self.read(after=0):
            self.last_seq = record.seq
        self._segment = self._open_tail()
        self.synced_seq = self.last_seq  # every record through it is on disk

    def append(self, kind: str, args: dict[str, Any], arrays: dict[str, np.ndarray]) -> Record:
        """Writes a record and waits until it is on disk."""
        record = self.write(kind, args, arrays)
        self.sync(record.seq)
        return record

    def write(self, kind: str, args: dict[str, Any], arrays: dict[str, np.ndarray]) -> Record:
        """Writes a record (in the page cache: a crash of the process keeps it, a power cut
        may not); `sync(record.seq)` before acknowledging it."""
        with self._lock:
            record = Record(self.last_seq + 1, kind, args, arrays)
            if self._segment.tell() > SEGMENT_BYTES:
                self._roll(record.seq)
            self._segment.write(encode(record))
            self._segment.flush()
            crashpoints.hit("after_wal_append")
            self.last_seq = record.seq
            return record

    def sync(self, seq: int) -> None:
        """Returns once every record through `seq` is on disk (group commit)."""
        if not self.fsync:
            return
        with self._sync_lock:
            if self.synced_seq >= seq:  # the fsync that just ran covered it
                return
            with self._lock:
                through, handle = self.last_seq, os.dup(self._segment.fileno())
            try:  # older segments were synced when they were rolled
                os.fsync(handle)
            finally:
                os.close(handle)
            self.synced_seq = max(self.synced_seq, through)

    def read(self, *, after: int) -> Iterator[Record]:
        """Records with seq > `after`, in order; stops at a torn tail."""
        for path in self._segments():
            for record in _records(path):
                if record.seq > after:
                    yield record

    def truncate_through(self, seq: int) -> None:
        """Deletes segments whose records are all at or below `seq` (a snapshot holds them)."""
        with self._lock:
            self._truncate_through(seq)

    def _truncate_through(self, seq: int) -> None:
        segments = self._segments()
        for path, following in itertools.pairwise(segments):
            if int(following.stem) - 1 <= seq:
                path.unlink(missing_ok=True)
        tail = segments[-1] if segments else None
        if tail is not None and self.last_seq <= seq and self._segment.tell() > 0:
            self._roll(self.last_seq + 1)
            tail.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._segment.close()

    @staticmethod
    def remove(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.wal"), key=lambda path: int(path.stem))

    def _open_tail(self) -> Any:
        segments = self._segments()
        if not segments:
            return open(self.directory / f"{self.last_seq + 1:020d}.wal", "ab")
        tail = segments[-1]
        good = _valid_length(tail)
        with open(tail, "r+b") as handle:  # cut a torn record left by a crash mid-append
            handle.truncate(good)
        return open(tail, "ab")

    def _roll(self, first_seq: int) -> None:
        if self.fsync:  # `sync` only ever fsyncs the tail
            os.fsync(self._segment.fileno())
        self._segment.close()
        self._segment = open(self.directory / f"{first_seq:020d}.wal", "ab")  # noqa: SIM115
        _fsync_dir(self.directory)


def _records(path: Path) -> Iterator[Record]:
    with open(path, "rb") as handle:
        while True:
            payload = _next_payload(handle)
            if payload is None:
                return
            yield decode(payload)


def _next_payload(handle: Any) -> bytes | None:
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack(header)
    payload: bytes = handle.read(length)
    if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload


def _valid_length(path: Path) -> int:
    """Bytes up to the end of the last whole, checksummed record."""
    good = 0
    with open(path, "rb") as handle:
        while _next_payload(handle) is not None:
            good = handle.tell()
    return good


def _fsync_dir(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
