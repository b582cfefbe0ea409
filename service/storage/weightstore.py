"""What the service asks of a weight store, and the store a setting names.

Two implementations: `service.storage.weights.WeightStore`, files in a folder (the default), and
`service.storage.objectstore.S3WeightStore`, objects on any S3-compatible store
(`GRADUAL_WEIGHTS_URL=s3://bucket/prefix`). Both keep the same guarantees: an object is
complete and its sha256 known before the row that names it commits (the callers write first,
commit second, and remove the object if the commit fails); `read` refuses a missing object
or one that fails its checksum with `VersionUnavailable` (a 410).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from service.config import Settings
from service.learning.checkpoint import Checkpoint
from service.storage.weights import StoredFile, StoredObject, WeightStore


class WeightStorage(Protocol):
    def write(self, model_id: int, checkpoint: Checkpoint) -> StoredFile: ...

    def read(self, relative: str, sha256: str) -> Checkpoint: ...

    def write_snapshot(self, model_id: int, seq: int, checkpoint: Checkpoint) -> None: ...

    def latest_snapshot(self, model_id: int) -> tuple[int, Checkpoint] | None: ...

    def write_fenced_snapshot(
        self, model_id: int, seq: int, fence: int, checkpoint: Checkpoint
    ) -> StoredFile: ...

    def prune_snapshots(self, model_id: int, *, keep: set[str]) -> None: ...

    def remove(self, relative: str) -> None: ...

    def remove_model(self, model_id: int) -> None: ...

    def objects(self) -> Iterator[StoredObject]:
        """Every object under a model's prefix (`m<id>/`), for `gradual check`."""
        ...

    def digest(self, relative: str) -> str | None:
        """The object's sha256, or None when it is missing."""
        ...


def open_store(settings: Settings) -> WeightStorage:
    if settings.weights_url is not None:
        from service.storage.objectstore import S3WeightStore  # the S3 client only when asked for

        return S3WeightStore.from_settings(settings)
    return WeightStore(settings.weights_root)
