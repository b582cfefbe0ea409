"""The registry checked against the weight store: missing files, checksum mismatches, orphans.

A version row whose file is missing or fails its sha256 cannot be repaired (the weights are
gone), so it is marked `missing` or `corrupt`: from then on it is refused with a 410, exactly
like an `archived` one, and never looked at again. A file no row refers to (a write torn by a
crash before its row committed, the leftovers of a deleted model, a `.tmp`) is an orphan and
is deleted. Recovery snapshots belong to the store and are left alone (a torn one is skipped
at load); only their `.tmp` files are orphans.

`gradual check` runs this against a data directory, and the service runs it at every start,
before loading models: nothing else writes then. Run by hand while a service is up, files
younger than `grace_s` are left alone (one may be a checkpoint whose row is about to commit).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from service.storage.registry import Registry

MODEL_FOLDER = re.compile(r"m\d+")  # the store's `m<model id>`
UNLOADABLE = ("missing", "corrupt")  # statuses this check gives; `archived` is retention's


@dataclass(frozen=True)
class Finding:
    kind: str  # missing | corrupt | orphan
    path: str  # relative to the weights folder
    model: str | None = None
    version: int | None = None
    repaired: bool = False

    def describe(self) -> str:
        what = f"{self.model} v{self.version}: " if self.model else ""
        action = {"orphan": "deleted", "missing": "marked missing", "corrupt": "marked corrupt"}
        done = f" ({action[self.kind]})" if self.repaired else ""
        return f"{what}{self.kind} {self.path}{done}"


@dataclass
class Report:
    versions: int = 0  # version rows whose file was checked
    files: int = 0  # files found in the store
    findings: list[Finding] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.findings


def check(registry: Registry, root: Path, *, repair: bool, grace_s: float = 0.0) -> Report:
    report = Report()
    referenced: set[str] = set()
    for name, row in registry.stored_versions():
        if row.status == "archived":
            continue  # retention deleted its file: a file still there is an orphan
        referenced.add(row.weights_path)  # a corrupt file is kept, as evidence
        if row.status in UNLOADABLE:
            continue  # reported and marked by an earlier check
        report.versions += 1
        problem = _file_problem(root / row.weights_path, row.weights_sha256)
        if problem is not None:
            if repair:
                registry.mark_version(row.id, problem)
            finding = Finding(problem, row.weights_path, name, row.number, repaired=repair)
            report.findings.append(finding)
    known = {f"m{model_id}" for model_id in registry.model_ids()}
    cutoff = time.time() - grace_s
    for path in _orphans(root, referenced, known, report):
        if grace_s and path.stat().st_mtime > cutoff:
            continue
        if repair:
            _remove(path)
        relative = path.relative_to(root).as_posix()
        report.findings.append(Finding("orphan", relative, repaired=repair))
    return report


def _file_problem(path: Path, sha256: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    return None if digest.hexdigest() == sha256 else "corrupt"


def _orphans(root: Path, referenced: set[str], known: set[str], report: Report) -> Iterator[Path]:
    """Model folders of no model; files of a model's folder no row refers to; stray `.tmp`s."""
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if not MODEL_FOLDER.fullmatch(folder.name) or not folder.is_dir():
            continue  # not a name the store makes: not ours to judge
        if folder.name not in known:
            report.files += sum(1 for p in folder.rglob("*") if p.is_file())
            yield folder
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            report.files += 1
            relative = path.relative_to(root).as_posix()
            in_snapshots = path.parent.name == "snapshots"
            if path.suffix == ".tmp" or (not in_snapshots and relative not in referenced):
                yield path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
