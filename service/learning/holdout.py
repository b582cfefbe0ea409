"""Which rows of the stream are held out for validation: a seeded hash of each row's content.

A row is held out when hash(seed, its features and target) / 2**64 < fraction. The same
stream therefore always splits the same way, whatever the batch boundaries; replaying it
after a crash splits it identically; and a row that comes round again (a second pass over
a data set, a retried batch) lands on the same side, so validation rows never leak into
training.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on 64-bit words with full avalanche."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


def row_hashes(seed: int, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of float32 `inputs` and its target(s)."""
    rows = inputs.shape[0]
    words = np.concatenate(
        [
            np.ascontiguousarray(inputs, dtype=np.float32).view(np.uint32).reshape(rows, -1),
            np.ascontiguousarray(targets.reshape(rows, -1), dtype=np.float32)
            .view(np.uint32)
            .reshape(rows, -1),
        ],
        axis=1,
    )
    columns = np.ascontiguousarray(words.T, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around arithmetic is the point of the hash
        columns += GOLDEN
        state = np.full(rows, _mix(np.array([seed], dtype=np.uint64) + GOLDEN)[0])
        spare = np.empty_like(state)
        for column in columns:  # _mix(state + column + GOLDEN), in place: a call a column
            state += column
            _mix_in_place(state, spare)
    return state


def _mix_in_place(z: np.ndarray, spare: np.ndarray) -> None:
    """`_mix` without temporaries (the same words)."""
    for shift, factor in _ROUNDS:
        np.right_shift(z, shift, out=spare)
        z ^= spare
        if factor is not None:
            z *= factor


_ROUNDS = (
    (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9)),
    (np.uint64(27), np.uint64(0x94D049BB133111EB)),
    (np.uint64(31), None),
)


def holdout_mask(seed: int, inputs: np.ndarray, targets: np.ndarray, fraction: float) -> np.ndarray:
    """True for the rows that go to validation and never train."""
    if fraction <= 0.0:
        return np.zeros(inputs.shape[0], dtype=bool)
    uniform = (row_hashes(seed, inputs, targets) >> np.uint64(11)).astype(np.float64) / 2.0**53
    return uniform < fraction
