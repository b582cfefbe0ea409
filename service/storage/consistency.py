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

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from service.storage.registry import Registry
from service.storage.weights import StoredObject
from service.storage.weightstore import WeightStorage

UNLOADABLE = ("missing", "corrupt")  # statuses this check gives; `archived` is retention's


@dataclass(frozen=True)
class Finding:
    kind: str  # missing | corrupt | orphan
    path: str  # relative to the weight store's root
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


def check(
    registry: Registry, store: WeightStorage, *, repair: bool, grace_s: float = 0.0
) -> Report:
    report = Report()
    referenced: set[str] = set()
    for name, row in registry.queries.stored_versions():
        if row.status == "archived":
            continue  # retention deleted its file: a file still there is an orphan
        referenced.add(row.weights_path)  # a corrupt file is kept, as evidence
        if row.status in UNLOADABLE:
            continue  # reported and marked by an earlier check
        report.versions += 1
        problem = _file_problem(store, row.weights_path, row.weights_sha256)
        if problem is not None:
            if repair:
                registry.mark_version(row.id, problem)
            finding = Finding(problem, row.weights_path, name, row.number, repaired=repair)
            report.findings.append(finding)
    known = {f"m{model_id}" for model_id in registry.queries.model_ids()}
    cutoff = time.time() - grace_s
    for found in _orphans(store, referenced, known, report):
        if grace_s and found.modified > cutoff:
            continue
        if repair:
            store.remove(found.path)
        report.findings.append(Finding("orphan", found.path, repaired=repair))
    return report


def _file_problem(store: WeightStorage, relative: str, sha256: str) -> str | None:
    digest = store.digest(relative)
    if digest is None:
        return "missing"
    return None if digest == sha256 else "corrupt"


def _orphans(
    store: WeightStorage, referenced: set[str], known: set[str], report: Report
) -> Iterator[StoredObject]:
    """Objects of no model; objects of a model no row refers to; stray `.tmp`s."""
    for found in store.objects():
        report.files += 1
        folder, _, rest = found.path.partition("/")
        stray = folder not in known or found.path.endswith(".tmp")
        unnamed = rest.rpartition("/")[0] != "snapshots" and found.path not in referenced
        if stray or unnamed:
            yield found
