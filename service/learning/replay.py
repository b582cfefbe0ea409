"""The replay buffer: recent training rows, sampled beside each new mini-batch.

Only rows that trained go in (never validation rows), after their request's steps applied.
Samples come from the buffer's own seeded generator, never the global one, and the buffer's
rows and generator state are part of every recovery snapshot, so a replayed log draws the
same rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from service.learning.buffer import ValidationBuffer

SEED_OFFSET = 0x5EED  # the generator differs from the network's, which has the model's seed


@dataclass(frozen=True)
class ReplayState:
    """The rows as they lie in the ring, its next write slot, and the generator's state."""

    x: torch.Tensor
    y: torch.Tensor
    next_slot: int
    rng: torch.Tensor


class ReplayBuffer:
    """A ring of `capacity` recent training rows (capacity 0: replay off, nothing kept)."""

    def __init__(
        self, capacity: int, features: int, target_shape: tuple[int, ...],
        target_dtype: torch.dtype, device: torch.device, *, seed: int,
    ) -> None:  # fmt: skip
        self.capacity = capacity
        self._layout = (features, target_shape, target_dtype, device)
        self.ring = (
            ValidationBuffer(capacity, features, target_shape, target_dtype, device)
            if capacity > 0
            else None
        )
        self.generator = torch.Generator().manual_seed((seed + SEED_OFFSET) % 2**63)

    @property
    def size(self) -> int:
        return 0 if self.ring is None else self.ring.size

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.ring is not None and x.shape[0] > 0:
            self.ring.add(x, y)

    def sample(self, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`rows` rows drawn uniformly with replacement (at most as many as are kept)."""
        count = min(rows, self.size)
        if self.ring is None or count == 0:
            return None
        x, y = self.ring.tensors()
        index = torch.randint(self.size, (count,), generator=self.generator).to(x.device)
        return x[index], y[index]

    def state(self) -> ReplayState:
        rng = self.generator.get_state()
        if self.ring is None:
            return ReplayState(torch.empty(0), torch.empty(0), 0, rng)
        x, y, next_slot = self.ring.ring()
        return ReplayState(x.clone(), y.clone(), next_slot, rng)

    def load(self, state: ReplayState) -> None:
        self.generator.set_state(state.rng.clone())
        if self.ring is not None:
            self.ring.load_ring(state.x, state.y, state.next_slot)

    def drawing_with(self, generator: torch.Generator) -> ReplayBuffer:
        """The same rows, drawn with another generator (a race candidate's own)."""
        view = ReplayBuffer(0, *self._layout, seed=0)
        view.capacity, view.ring, view.generator = self.capacity, self.ring, generator
        return view

    def resized(self, capacity: int) -> ReplayBuffer:
        """A buffer of `capacity` with the newest rows of this one and the same generator."""
        new = ReplayBuffer(capacity, *self._layout, seed=0)
        new.generator.set_state(self.generator.get_state())
        if self.ring is not None:
            new.add(*self.ring.oldest_first())
        return new
