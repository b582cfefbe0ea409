"""Storage faults: a full, read-only or vanished disk as a refusal a client can act on.

Every write the service makes lands in one of a few directories: the write-ahead log (the data
dir), the weight files and snapshots (the weights dir) and, with SQLite, the database file.
Before a change is logged, `StorageGuard.check` refuses it when one of them has less free
space than the reserve (507 `storage_full`), or is read-only or gone (503
`storage_unavailable`), so nothing of it is applied. A write that fails anyway is classified
into the same two errors by `StorageGuard.writing`. The guard remembers the last failure:
/readyz answers 503 with it until a write (or its own probe write) succeeds again.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from service.config import Settings
from service.errors import StorageFull, StorageUnavailable, Unavailable

log = logging.getLogger("gradual.storage")

Resource = Literal["log", "weights", "database"]
StorageFault = StorageFull | StorageUnavailable

FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
GONE = {errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.EIO}
SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN = 13, 8, 10, 14
PROBE = ".gradual-probe"
# /readyz calls a volume writable again only with this much free beyond the reserve: a tiny
# probe file fits where the record that failed did not.
HEADROOM = 1024 * 1024


@dataclass(frozen=True)
class Volume:
    """A directory the service writes to, named by what it holds."""

    resource: Resource
    path: Path


def volumes_of(settings: Settings) -> list[Volume]:
    """The write-ahead log's, the weights' (unless they are in object storage) and (with
    SQLite) the database's directories."""
    found = [Volume("log", settings.data_dir)]
    if settings.weights_url is None:
        found.append(Volume("weights", settings.weights_root))
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        found.append(Volume("database", Path(str(url.database)).parent))
    return found


class StorageGuard:
    """Checks the volumes before a change is logged, classifies failed writes, and holds the
    last failure for /readyz. Its fault is set and cleared only by its own methods."""

    def __init__(self, volumes: list[Volume], *, reserve: int, retry_after: float) -> None:
        self.volumes = volumes
        self.reserve = reserve
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._fault: StorageFault | None = None

    @property
    def fault(self) -> StorageFault | None:
        """The last write's failure, or None once a write succeeded after it."""
        return self._fault

    def check(self, *, headroom: int = 0) -> None:
        """Refuses a change (and records why) unless every volume is there, writable and has
        more free space than the reserve (plus `headroom`)."""
        for volume in self.volumes:
            problem = self._problem(volume, self.reserve + headroom)
            if problem is not None:
                self._failed(problem)
                raise problem

    def free_bytes(self) -> dict[Resource, int]:
        """Free bytes of each volume an unprivileged writer may use (vanished ones left out)."""
        free: dict[Resource, int] = {}
        for volume in self.volumes:
            try:
                stat = os.statvfs(volume.path)
            except OSError:
                continue
            free[volume.resource] = stat.f_bavail * stat.f_frsize
        return free

    @contextmanager
    def writing(self, resource: Resource | None = None, *, refusal: bool = False) -> Iterator[None]:
        """Runs a write: a storage failure becomes `StorageFull` or `StorageUnavailable`
        (naming `resource`, or the volume of the failing path); success clears the fault.
        `refusal`: a failure leaves nothing applied (the message says so)."""
        try:
            yield
        except (OSError, OperationalError) as exc:
            fault = self.classify(exc, resource, refusal=refusal)
            if fault is None:
                raise
            self._failed(fault)
            raise fault from exc
        self._succeeded()

    def note(self, exc: BaseException) -> None:
        """Records a write's failure met elsewhere (a history write, tried again later)."""
        fault = self.classify(exc)
        if fault is not None:
            self._failed(fault)

    def classify(
        self, exc: BaseException, resource: Resource | None = None, *, refusal: bool = False
    ) -> StorageFault | None:
        """The storage fault `exc` is, or None when it is something else."""
        code = _fault_kind(exc)
        if code is None:
            return None
        named = resource or self._resource_of(exc)
        detail = f"{named} write failed: {_reason(exc)}"
        return self._fault_of(code, named, detail, refusal=refusal)

    def probe(self) -> bool:
        """Whether every volume takes a write now (`HEADROOM` free beyond the reserve, and a
        small file written, synced and removed); success clears the fault, so a replica turns
        ready again by itself."""
        try:
            self.check(headroom=HEADROOM)
            for volume in self.volumes:
                with self.writing(volume.resource):
                    _probe_write(volume.path)
        except (StorageFull, StorageUnavailable):
            return False
        return True

    def _problem(self, volume: Volume, least: int) -> StorageFault | None:
        try:
            stat = os.statvfs(volume.path)
        except OSError as exc:
            detail = f"{volume.path}: {_reason(exc)}"
            return self._fault_of("gone", volume.resource, detail, refusal=True)
        if stat.f_flag & os.ST_RDONLY:
            detail = f"{volume.path} is read-only"
            return self._fault_of("gone", volume.resource, detail, refusal=True)
        free = stat.f_bavail * stat.f_frsize
        if free <= least:
            message = (
                f"{volume.path} has {free} bytes free; writes need more than {least} "
                f"(GRADUAL_STORAGE_RESERVE_BYTES={self.reserve})"
            )
            return self._fault_of("full", volume.resource, message, refusal=True)
        return None

    def _fault_of(
        self, kind: str, resource: Resource, detail: str, *, refusal: bool
    ) -> StorageFault:
        # A write after logging may fail once its batch has trained: a resend says duplicate.
        after = "nothing was applied" if refusal else "retry with the same batch_id"
        if kind == "full":
            message = f"no space for the {resource}: {detail}; {after}"
            return StorageFull(message, resource=resource, retry_after=self.retry_after)
        message = f"the {resource} cannot be written: {detail}; {after}"
        return StorageUnavailable(message, resource=resource, retry_after=self.retry_after)

    def _resource_of(self, exc: BaseException) -> Resource:
        if isinstance(exc, OperationalError):
            return "database"
        filename = getattr(exc, "filename", None)
        if filename is not None:
            path = Path(os.fsdecode(filename)).resolve()
            # the most specific volume first: the weights dir is usually inside the data dir
            for volume in sorted(self.volumes, key=lambda v: -len(v.path.resolve().parts)):
                if path.is_relative_to(volume.path.resolve()):
                    return volume.resource
        return "weights"  # the writes that reach here unnamed are the weight files'

    def _failed(self, fault: StorageFault) -> None:
        with self._lock:
            if self._fault is None:
                log.error("storage fault: %s", fault.message)
            self._fault = fault

    def _succeeded(self) -> None:
        if self._fault is None:
            return
        with self._lock:
            if self._fault is not None:
                log.warning("storage writable again (was: %s)", self._fault.message)
            self._fault = None


def _fault_kind(exc: BaseException) -> str | None:
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "sqlite_errorcode", None)
        if code is None:
            return None  # PostgreSQL unreachable is not a storage fault of this process
        if code & 0xFF == SQLITE_FULL:
            return "full"
        if code & 0xFF in {SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN}:
            return "gone"
        return None
    if isinstance(exc, OSError):
        if exc.errno in FULL:
            return "full"
        if exc.errno in GONE:
            return "gone"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OperationalError):
        return str(exc.orig)
    return str(exc)


def _probe_write(directory: Path) -> None:
    path = directory / PROBE
    with open(path, "wb") as handle:
        try:
            handle.write(b"gradual")
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            path.unlink(missing_ok=True)


@contextmanager
def database_reachable(message: str) -> Iterator[None]:
    """A database server that stayed unreachable past GRADUAL_DATABASE_WAIT_S: a 503 saying
    `message` (SQLite's errors are the storage guard's: its file is local storage)."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        if hasattr(exc.orig, "sqlite_errorcode"):
            raise
        raise Unavailable(f"the database is unreachable; {message}") from exc
