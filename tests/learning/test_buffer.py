"""The validation buffer's ring, tested on row ids (no network)."""

from __future__ import annotations

import pytest
import torch

from service.learning.buffer import ValidationBuffer


def ring(capacity: int, *chunks: int) -> ValidationBuffer:
    """A buffer fed `chunks` of consecutive rows; row i has feature i and label i % 3."""
    buffer = ValidationBuffer(capacity, 1, (), torch.int64, torch.device("cpu"))
    first = 0
    for size in chunks:
        ids = torch.arange(first, first + size)
        buffer.add(ids.float().reshape(-1, 1), ids % 3)
        first += size
    return buffer


def ids(rows: tuple[torch.Tensor, torch.Tensor]) -> list[int]:
    return [int(v) for v in rows[0].reshape(-1).tolist()]


@pytest.mark.parametrize(
    ("capacity", "chunks", "oldest_first"),
    [
        (5, [3], [0, 1, 2]),
        (5, [5], [0, 1, 2, 3, 4]),
        (5, [3, 4], [2, 3, 4, 5, 6]),
        (5, [4, 4, 4], [7, 8, 9, 10, 11]),
        (5, [2, 9], [6, 7, 8, 9, 10]),
        (5, [12], [7, 8, 9, 10, 11]),
    ],
)
def test_ring_keeps_the_latest_rows_in_arrival_order(
    capacity: int, chunks: list[int], oldest_first: list[int]
) -> None:
    buffer = ring(capacity, *chunks)
    assert buffer.size == len(oldest_first)
    assert ids(buffer.oldest_first()) == oldest_first
    assert sorted(ids(buffer.tensors())) == oldest_first


def test_labels_travel_with_their_rows() -> None:
    x, y = ring(4, 3, 3).oldest_first()
    assert (y == x.reshape(-1).long() % 3).all()


def test_class_counts_and_clear() -> None:
    buffer = ring(10, 7)
    assert buffer.class_counts(4) == [3, 2, 2, 0]
    buffer.clear()
    assert (buffer.size, buffer.class_counts(4)) == (0, [0, 0, 0, 0])
