"""The validation buffer: the latest labelled rows that never train, held on the model's device."""

from __future__ import annotations

import torch

from models.losses import target_dtype
from models.spec import NetworkSpec


def layout_of(spec: NetworkSpec) -> tuple[int, tuple[int, ...], torch.dtype]:
    """What a buffer of `spec`'s rows holds: features, the target shape and dtype."""
    shape: tuple[int, ...] = () if spec.task == "classification" else (spec.outputs,)
    return spec.inputs, shape, target_dtype(spec)


class ValidationBuffer:
    """A ring of `capacity` rows; adding past capacity overwrites the oldest rows."""

    def __init__(
        self, capacity: int, features: int, target_shape: tuple[int, ...],
        target_dtype: torch.dtype, device: torch.device,
    ) -> None:  # fmt: skip
        self.capacity = capacity
        self._x = torch.empty((capacity, features), dtype=torch.float32, device=device)
        self._y = torch.empty((capacity, *target_shape), dtype=target_dtype, device=device)
        self._next = 0
        self.size = 0
        self.changed = False  # rows came or went since a reader last counted classes

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        rows = x.shape[0]
        if rows >= self.capacity:  # only the newest rows fit
            x, y, rows = x[-self.capacity :], y[-self.capacity :], self.capacity
        first = min(rows, self.capacity - self._next)
        self._x[self._next : self._next + first] = x[:first]
        self._y[self._next : self._next + first] = y[:first].reshape(self._y[:first].shape)
        rest = rows - first
        if rest:
            self._x[:rest] = x[first:]
            self._y[:rest] = y[first:].reshape(self._y[:rest].shape)
        self._next = (self._next + rows) % self.capacity
        self.size = min(self.capacity, self.size + rows)
        self.changed = True

    def resized(self, capacity: int) -> ValidationBuffer:
        """A buffer of `capacity` holding this one's newest rows, in arrival order."""
        x, y = self.oldest_first()
        new = ValidationBuffer(capacity, x.shape[1], tuple(y.shape[1:]), y.dtype, x.device)
        new.add(x, y)
        return new

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._x[: self.size], self._y[: self.size]

    def oldest_first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows in arrival order: once the ring has wrapped, the oldest is at `_next`."""
        if self.size < self.capacity:
            return self.tensors()
        shift = -self._next
        return torch.roll(self._x, shift, dims=0), torch.roll(self._y, shift, dims=0)

    def newest(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The latest `rows` rows (all of them when fewer are held)."""
        x, y = self.oldest_first()
        return x[-rows:], y[-rows:]

    def ring(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The filled slots as they lie, and the next write position (for snapshots)."""
        x, y = self.tensors()
        return x, y, self._next

    def load_ring(self, x: torch.Tensor, y: torch.Tensor, next_slot: int) -> None:
        """Restores `ring()`'s output exactly, slot for slot."""
        rows = x.shape[0]
        self._x[:rows] = x.to(self._x.device)
        self._y[:rows] = y.to(self._y.device).reshape(self._y[:rows].shape)
        self.size, self._next = rows, next_slot
        self.changed = True

    def class_counts(self, classes: int) -> list[int]:
        """Rows per class; the buffer is unchanged from here until rows come or go."""
        self.changed = False
        _, y = self.tensors()
        counts = torch.bincount(y.reshape(-1).long(), minlength=classes)
        return [int(c) for c in counts.tolist()]

    def clear(self) -> None:
        self._next = 0
        self.size = 0
        self.changed = True
