"""The weight stores the tests run on: the folder, and S3 on a real emulator process.

`store_kind` is "folder" unless a test parametrises it (`@pytest.mark.parametrize(
"store_kind", STORES)`); "s3" starts moto's standalone S3 server once per session (or uses
GRADUAL_TEST_S3_ENDPOINT) and gives each test a bucket of its own. The `raw_*` helpers
damage objects behind the service's back, as a disk or a bucket could.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from service.config import Settings
from service.storage.weights import WeightStore
from service.storage.weightstore import WeightStorage, open_store
from tests.live_server import free_port

STORES = ["folder", "s3"]
S3_ENDPOINT = os.environ.get("GRADUAL_TEST_S3_ENDPOINT")
CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server: moto's emulator in a process of its own, for the session."""
    if S3_ENDPOINT:
        yield S3_ENDPOINT
        return
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(endpoint, process, log)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while process.poll() is None:
        try:
            httpx.get(endpoint, timeout=2)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"the S3 emulator did not start; see {log}"
            time.sleep(0.1)
    pytest.fail(f"the S3 emulator exited at start; see {log}")


def new_bucket(endpoint: str) -> str:
    """A bucket of its own on the S3 server at `endpoint`: its name."""
    name = f"gradual-{uuid.uuid4().hex[:12]}"
    assert httpx.put(f"{endpoint}/{name}").status_code == 200
    return name


@pytest.fixture
def store_kind() -> str:
    return "folder"


@pytest.fixture
def store_settings(request: pytest.FixtureRequest, store_kind: str) -> dict[str, Any]:
    """Settings for the store: none for the folder; a fresh bucket on the emulator for S3."""
    if store_kind == "folder":
        return {}
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket = new_bucket(endpoint)
    return {"weights_url": f"s3://{bucket}/weights", "s3_endpoint": endpoint} | CREDENTIALS


@pytest.fixture
def weight_store(tmp_path: Path, store_settings: dict[str, Any]) -> WeightStorage:
    """The store alone, as the service opens it from its settings."""
    return open_store(Settings(data_dir=tmp_path / "data", **store_settings))


def raw_read(store: WeightStorage, relative: str) -> bytes:
    if isinstance(store, WeightStore):
        return (store.root / relative).read_bytes()
    return bytes(obstore.get(_s3(store), relative).bytes())


def raw_write(store: WeightStorage, relative: str, data: bytes) -> None:
    if isinstance(store, WeightStore):
        (store.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (store.root / relative).write_bytes(data)
    else:
        obstore.put(_s3(store), relative, data)


def exists(store: WeightStorage, relative: str) -> bool:
    return store.digest(relative) is not None


def flip_last_byte(store: WeightStorage, relative: str) -> None:
    data = bytearray(raw_read(store, relative))
    data[-1] ^= 0xFF
    raw_write(store, relative, bytes(data))


def _s3(store: WeightStorage) -> Any:
    return store.store  # type: ignore[attr-defined]
