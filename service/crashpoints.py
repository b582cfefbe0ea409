"""Fault injection for the crash tests: SIGKILL this process at a named point.

Armed once at start from `GRADUAL_CRASHPOINT` (`name` or `name:N` for the N-th time the point
is reached); unarmed, `hit` is a dictionary lookup. Points: `after_wal_append`,
`after_weights_fsync`, `after_rename`, `after_db_commit`, `mid_step`, `after_snapshot`.
"""

from __future__ import annotations

import os
import signal

_armed: dict[str, int] = {}


def arm(spec: str | None) -> None:
    _armed.clear()
    if spec:
        name, _, count = spec.partition(":")
        _armed[name] = int(count or 1)


def hit(name: str) -> None:
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
