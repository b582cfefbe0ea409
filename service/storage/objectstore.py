"""Weights and snapshots as objects on an S3-compatible store, through obstore.

The same layout as the folder (`<prefix>/m<model id>/<uuid>.safetensors`, snapshots under
`m<id>/snapshots/`) and the same guarantees: an S3 PUT is atomic (an object is whole or
absent, never torn), and each write is verified before it returns: the ETag of a single-part
PUT is the MD5 of the bytes, compared with ours; where a store answers another kind of ETag
the object is read back and its sha256 compared. Callers commit the row that names an object
only after this, and remove the object when the commit fails.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from service.config import Settings
from service.errors import VersionUnavailable
from service.learning.checkpoint import Checkpoint
from service.storage.weights import (
    MODEL_FOLDER,
    StoredFile,
    StoredObject,
    decode,
    encode,
)

MD5 = re.compile(r"[0-9a-f]{32}")


class S3WeightStore:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> S3WeightStore:
        assert settings.weights_url is not None
        parsed = urlparse(settings.weights_url)
        config: dict[str, str] = {"region": settings.s3_region}
        if settings.s3_endpoint:
            config["endpoint"] = settings.s3_endpoint
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            config["access_key_id"] = settings.s3_access_key_id
            config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
        allow_http = bool(settings.s3_endpoint and settings.s3_endpoint.startswith("http://"))
        store = S3Store(
            parsed.netloc, prefix=parsed.path.strip("/") or None, config=config,  # type: ignore[arg-type]
            client_options={"allow_http": allow_http}, virtual_hosted_style_request=False,
        )  # fmt: skip
        return cls(store)

    # -- versions -------------------------------------------------------------------------

    def write(self, model_id: int, checkpoint: Checkpoint) -> StoredFile:
        return self._put(f"m{model_id}/{uuid.uuid4().hex}.safetensors", encode(checkpoint))

    def read(self, relative: str, sha256: str) -> Checkpoint:
        data = self._get(relative)
        if data is None:
            raise VersionUnavailable(f"weights object {relative} is missing")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VersionUnavailable(f"weights object {relative} fails its checksum")
        return decode(data)

    # -- recovery snapshots ---------------------------------------------------------------

    def write_snapshot(self, model_id: int, seq: int, checkpoint: Checkpoint) -> None:
        self._put(f"m{model_id}/snapshots/{seq:020d}.safetensors", encode(checkpoint))
        local = sorted(p for p in self._snapshot_paths(model_id) if _stem(p).isdigit())
        for older in local[:-2]:
            self.remove(older)

    def latest_snapshot(self, model_id: int) -> tuple[int, Checkpoint] | None:
        local = [p for p in self._snapshot_paths(model_id) if _stem(p).isdigit()]
        for path in sorted(local, reverse=True):
            data = self._get(path)
            try:
                if data is not None:
                    return int(_stem(path)), decode(data)
            except (ValueError, KeyError, VersionUnavailable):
                continue
        return None

    def write_fenced_snapshot(
        self, model_id: int, seq: int, fence: int, checkpoint: Checkpoint
    ) -> StoredFile:
        relative = f"m{model_id}/snapshots/{seq:020d}-f{fence}.safetensors"
        return self._put(relative, encode(checkpoint))

    def prune_snapshots(self, model_id: int, *, keep: set[str]) -> None:
        for path in self._snapshot_paths(model_id):
            if "-f" in _stem(path) and path not in keep:
                self.remove(path)

    def _snapshot_paths(self, model_id: int) -> list[str]:
        return [o.path for o in self._list(f"m{model_id}/snapshots/")]

    # -- housekeeping ---------------------------------------------------------------------

    def remove(self, relative: str) -> None:
        obstore.delete(self.store, relative)  # deleting a missing object is not an error

    def remove_model(self, model_id: int) -> None:
        paths = [o.path for o in self._list(f"m{model_id}/")]
        if paths:
            obstore.delete(self.store, paths)

    def objects(self) -> Iterator[StoredObject]:
        for found in self._list(None):
            if MODEL_FOLDER.fullmatch(found.path.partition("/")[0]):
                yield found

    def digest(self, relative: str) -> str | None:
        data = self._get(relative)
        return None if data is None else hashlib.sha256(data).hexdigest()

    # -- the wire -------------------------------------------------------------------------

    def _put(self, relative: str, data: bytes) -> StoredFile:
        sha256 = hashlib.sha256(data).hexdigest()
        result = obstore.put(self.store, relative, data)
        etag = (result.get("e_tag") or "").strip('"')
        if MD5.fullmatch(etag):
            intact = etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        else:
            intact = self.digest(relative) == sha256
        if not intact:
            self.remove(relative)
            raise OSError(f"object {relative} was not stored intact")
        return StoredFile(relative, sha256, len(data))

    def _get(self, relative: str) -> bytes | None:
        try:
            return bytes(obstore.get(self.store, relative).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    def _list(self, prefix: str | None) -> list[StoredObject]:
        found: list[StoredObject] = []
        for chunk in obstore.list(self.store, prefix):
            found += [StoredObject(o["path"], o["last_modified"].timestamp()) for o in chunk]
        return found


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".safetensors")
