"""Small filesystems a test mounts for itself: tmpfs to fill, ext4 on a loop device to turn
read-only mid-stream. Mounting needs root; elsewhere the test skips with the reason, and
GRADUAL_TEST_REQUIRE_SERVICES=1 (CI) turns that skip into a failure."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

BALLAST = "ballast"


def cannot_mount(reason: str) -> None:
    message = f"cannot mount a test filesystem ({reason}); run the test as root"
    if REQUIRE_SERVICES:
        pytest.fail(f"GRADUAL_TEST_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def _privileged(*command: str) -> None:
    """Runs a command that needs root (mount, mkfs), or skips the test with why it failed."""
    if os.geteuid() != 0:
        cannot_mount("not root")
    if shutil.which(command[0]) is None:
        cannot_mount(f"no {command[0]}")
    done = _run(*command)
    if done.returncode != 0:
        cannot_mount(done.stderr.strip() or f"{command[0]} exited {done.returncode}")


def _unmount(path: Path) -> None:
    if _run("umount", str(path)).returncode != 0:  # a process still holds it: detach it
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at `path` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    _privileged("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def ext4(path: Path, image: Path, size: int) -> Iterator[Path]:
    """ext4 on a loop device, `errors=remount-ro`: `read_only` turns it read-only at once, as
    the kernel does after an I/O error, even while files are open for writing (a plain
    `mount -o remount,ro` is refused while they are: EBUSY)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(size)
    _privileged("mkfs.ext4", "-q", "-F", str(image))
    _privileged("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
    try:
        yield path
    finally:
        _unmount(path)


def read_only(path: Path) -> None:
    """Makes the ext4 at `path` read-only now: an error reported through sysfs."""
    device = Path(_run("findmnt", "-n", "-o", "SOURCE", str(path)).stdout.strip()).name
    trigger = Path("/sys/fs/ext4") / device / "trigger_fs_error"
    if not trigger.exists():
        cannot_mount(f"no {trigger} (a kernel before 5.x): no way to fail ext4 on demand")
    trigger.write_text("gradual test\n")
    # (statvfs may not say ST_RDONLY yet: the kernel sets it later; writes fail at once)
    try:
        (path / "probe").write_bytes(b"x")
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    else:
        raise AssertionError(f"{path} did not turn read-only")


def repair(path: Path, image: Path) -> None:
    """Unmounts, checks and mounts the image read-write again (as an operator would)."""
    _unmount(path)
    _run("e2fsck", "-f", "-y", str(image))
    _privileged("mount", "-o", "loop,errors=remount-ro", str(image), str(path))


def fill(path: Path, *, leave: int = 0) -> Path:
    """Writes a ballast file until `path`'s filesystem has at most `leave` bytes free."""
    ballast = path / BALLAST
    with open(ballast, "ab", buffering=0) as handle:
        while (free := _free(path)) > leave:
            try:
                handle.write(b"\0" * min(free - leave, 1 << 20))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return ballast


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
