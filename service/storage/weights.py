"""The weight store: checkpoints as safetensors files, written atomically, checked on load.

A checkpoint is everything a training step depends on: the network's parameters and buffers
(the standardizer's statistics included), the optimizer's state, and the generator that draws
dropout masks and noise. Tensors go in the safetensors body; plain data (hyper-parameters,
counters) in its JSON header. Nothing is ever pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from service import crashpoints
from service.errors import VersionUnavailable
from service.learning.checkpoint import Checkpoint

FORMAT = "gradual-checkpoint-1"
MODEL_FOLDER = re.compile(r"m\d+")  # the store's `m<model id>`


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredObject:
    path: str  # relative to the store's root: m<model id>/...
    modified: float  # seconds since the epoch


class WeightStore:
    """Files at `root/m<model id>/<uuid>.safetensors`: names from ids, never from clients."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, model_id: int, checkpoint: Checkpoint) -> StoredFile:
        data = encode(checkpoint)
        relative = f"m{model_id}/{uuid.uuid4().hex}.safetensors"
        _write_atomically(self.root / relative, data)
        return StoredFile(relative, hashlib.sha256(data).hexdigest(), len(data))

    def read(self, relative: str, sha256: str) -> Checkpoint:
        path = self.root / relative
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise VersionUnavailable(f"weights file {relative} is missing") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VersionUnavailable(f"weights file {relative} fails its checksum")
        return decode(data)

    def write_snapshot(self, model_id: int, seq: int, checkpoint: Checkpoint) -> None:
        """A recovery snapshot: the learner's whole state after log record `seq`."""
        _write_atomically(self._snapshots(model_id) / f"{seq:020d}.safetensors", encode(checkpoint))
        local = [p for p in self._snapshots(model_id).glob("*.safetensors") if p.stem.isdigit()]
        for older in sorted(local)[:-2]:
            older.unlink(missing_ok=True)  # keep the newest two: one may be mid-write at a crash

    def latest_snapshot(self, model_id: int) -> tuple[int, Checkpoint] | None:
        for path in sorted(self._snapshots(model_id).glob("*.safetensors"), reverse=True):
            if not path.stem.isdigit():
                continue  # scale-out snapshots: the database names the committed one
            try:
                return int(path.stem), decode(path.read_bytes())
            except (ValueError, KeyError, VersionUnavailable):
                continue  # a torn file from a crash: fall back to the one before
        return None

    def write_fenced_snapshot(
        self, model_id: int, seq: int, fence: int, checkpoint: Checkpoint
    ) -> StoredFile:
        """Scale-out: a snapshot named by its owner's fence, so an owner whose lease lapsed never
        overwrites its successor's; the database says which one is committed."""
        data = encode(checkpoint)
        relative = f"m{model_id}/snapshots/{seq:020d}-f{fence}.safetensors"
        self._snapshots(model_id)
        _write_atomically(self.root / relative, data)
        return StoredFile(relative, hashlib.sha256(data).hexdigest(), len(data))

    def prune_snapshots(self, model_id: int, *, keep: set[str]) -> None:
        for path in self._snapshots(model_id).glob("*-f*.safetensors"):
            if path.relative_to(self.root).as_posix() not in keep:
                path.unlink(missing_ok=True)

    def _snapshots(self, model_id: int) -> Path:
        path = self.root / f"m{model_id}" / "snapshots"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def remove_model(self, model_id: int) -> None:
        shutil.rmtree(self.root / f"m{model_id}", ignore_errors=True)

    def objects(self) -> Iterator[StoredObject]:
        """Every file under a model's folder (`m<id>/`), for `gradual check`."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and MODEL_FOLDER.fullmatch(folder.name):
                for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                    relative = path.relative_to(self.root).as_posix()
                    yield StoredObject(relative, path.stat().st_mtime)

    def digest(self, relative: str) -> str | None:
        digest = hashlib.sha256()
        try:
            with open(self.root / relative, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()


def encode(checkpoint: Checkpoint) -> bytes:
    tensors = {f"network/{k}": _cpu(v) for k, v in checkpoint.network.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in checkpoint.optimizer["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng"] = _cpu(checkpoint.rng)
    tensors.update({f"extra/{k}": _cpu(v) for k, v in checkpoint.extra.items()})
    header = {
        "format": FORMAT,
        "param_groups": checkpoint.optimizer["param_groups"],
        "optimizer_scalars": scalars,
        "meta": checkpoint.meta,
    }
    # One key holding sorted JSON: safetensors orders metadata keys arbitrarily, and the same
    # state must always encode to the same bytes (and sha256).
    return bytes(save_tensors(tensors, metadata={"gradual": json.dumps(header, sort_keys=True)}))


def decode(data: bytes) -> Checkpoint:
    header = json.loads(_read_header(data).get("gradual", "{}"))
    if header.get("format") != FORMAT:
        raise VersionUnavailable("weights file is not a Gradual checkpoint")
    tensors = load_tensors(data)
    network: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    state: dict[int, dict[str, Any]] = {
        int(k): dict(v) for k, v in header["optimizer_scalars"].items()
    }
    for name, tensor in tensors.items():
        kind, _, rest = name.partition("/")
        if kind == "network":
            network[rest] = tensor
        elif kind == "optimizer":
            index, _, key = rest.partition("/")
            state.setdefault(int(index), {})[key] = tensor
        elif kind == "extra":
            extra[rest] = tensor
    optimizer = {"state": state, "param_groups": header["param_groups"]}
    return Checkpoint(network, optimizer, tensors["rng"], header["meta"], extra)


def _read_header(data: bytes) -> dict[str, str]:
    (length,) = struct.unpack("<Q", data[:8])
    parsed = json.loads(data[8 : 8 + length])
    metadata: dict[str, str] = parsed.get("__metadata__") or {}
    return metadata


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _write_atomically(path: Path, data: bytes) -> None:
    """temp file → fsync → rename → fsync(dir): a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:  # a full disk: the part written would hold on to the space left
        with contextlib.suppress(OSError):  # (a read-only one refuses this too)
            temporary.unlink()
        raise
    crashpoints.hit("after_weights_fsync")
    os.replace(temporary, path)
    crashpoints.hit("after_rename")
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
