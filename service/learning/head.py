"""The training head: the network that learns, with its optimizer, loss and counters."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from models.losses import make_loss
from models.network import Network, build_network
from models.optimizers import build_optimizer
from models.spec import NetworkSpec, OptimizerSpec
from service.learning.checkpoint import Checkpoint
from service.learning.compilation import CompiledForward


@dataclass(frozen=True)
class HeadState:
    """A copy of everything a step can change, on the head's device (for transactions)."""

    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    step: int
    samples_seen: int


class Backup:
    """What a refused request must restore, copied into buffers kept from one request to the
    next: one fused copy per request instead of cloning (and allocating) the whole state.

    Parameters, buffers and the optimizer's per-parameter tensors are copied; its non-tensor
    entries, the learning rates, the generator and the counters are kept as values.
    """

    def __init__(self) -> None:
        self._keys: list[tuple[int, str]] = []  # (parameter index, optimizer state key)
        self._store: list[torch.Tensor] = []
        self._values: dict[tuple[int, str], Any] = {}
        self._had_state: list[bool] = []
        self._lrs: list[float] = []
        self._rng = torch.empty(0, dtype=torch.uint8)
        self._counters = (0, 0)

    def save(self, head: TrainingHead) -> None:
        states = [head.optimizer.state.get(p, {}) for p in head.parameters]
        keys = [(i, k) for i, st in enumerate(states) for k, v in st.items() if _is_tensor(v)]
        live = head.module_tensors + [states[i][k] for i, k in keys]
        if keys != self._keys or len(live) != len(self._store):
            self._keys, self._store = keys, [t.detach().clone() for t in live]
        else:
            with torch.no_grad():
                torch._foreach_copy_(self._store, live)
        self._values = {(i, k): v for i, st in enumerate(states) for k, v in st.items()}
        self._values = {key: v for key, v in self._values.items() if not _is_tensor(v)}
        self._had_state = [bool(st) for st in states]
        self._lrs = [group["lr"] for group in head.optimizer.param_groups]
        self._rng, self._counters = head.generator.get_state(), (head.step, head.samples_seen)

    def restore(self, head: TrainingHead) -> None:
        """Puts back, bit for bit, what `save` saw (a refusal is rare: clones are fine)."""
        own = head.module_tensors
        with torch.no_grad():
            torch._foreach_copy_(own, self._store[: len(own)])
        saved = dict(zip(self._keys, self._store[len(own) :], strict=True))
        for i, param in enumerate(head.parameters):
            if not self._had_state[i]:
                head.optimizer.state.pop(param, None)
                continue
            entries = {k: v.clone() for (j, k), v in saved.items() if j == i}
            entries |= {k: v for (j, k), v in self._values.items() if j == i}
            head.optimizer.state[param] = entries
        for group, lr in zip(head.optimizer.param_groups, self._lrs, strict=True):
            group["lr"] = lr
        head.generator.set_state(self._rng)
        head.step, head.samples_seen = self._counters


class TrainingHead:
    def __init__(
        self, spec: NetworkSpec, optimizer: OptimizerSpec, *, seed: int, device: torch.device,
        describe: bool = False,
    ) -> None:  # fmt: skip
        self.spec = spec
        # A race candidate's versions name their spec: a model's versions may then differ in it.
        self.describe = describe
        self.device = device
        self.network: Network = build_network(spec, seed=seed, device=device)
        self.network.train()
        # Walked several times a step: listed once (loading a state copies into these same
        # tensors, and the optimizer holds them too, so they are never replaced).
        self.parameters = list(self.network.parameters())
        self.float_buffers = [b for b in self.network.buffers() if b.is_floating_point()]
        self.module_tensors = [p.detach() for p in self.parameters] + list(self.network.buffers())
        self.optimizer = build_optimizer(optimizer, self.parameters)
        self.loss = make_loss(spec)
        self.step = 0
        self.samples_seen = 0
        self.backup = Backup()  # the transaction's copy, reused by every request
        self._compiled: CompiledForward | None = None  # made at the first compiled step

    def carry_counters(self, other: TrainingHead) -> None:
        """Counts on from `other`'s steps and rows (a race's new leader takes the model's)."""
        self.step, self.samples_seen = other.step, other.samples_seen

    def forward(self, x: torch.Tensor, *, compiled: bool) -> torch.Tensor:
        """The training forward pass; `compiled`: through `torch.compile` (GRADUAL_COMPILE=all)."""
        if not compiled:
            out: torch.Tensor = self.network(x)
            return out
        if self._compiled is None:
            self._compiled = CompiledForward(self.network)
        return self._compiled(x)

    @property
    def generator(self) -> torch.Generator:
        assert self.network.generator is not None
        return self.network.generator

    def state(self) -> HeadState:
        return HeadState(
            network={k: v.detach().clone() for k, v in self.network.state_dict().items()},
            optimizer=_clone_optimizer_state(self.optimizer.state_dict()),
            rng=self.generator.get_state(),
            step=self.step,
            samples_seen=self.samples_seen,
        )

    def load_state(self, state: HeadState, *, counters: bool = True) -> None:
        """Restores the head bit for bit (tensors are copied in, never aliased).

        `counters=False` keeps the stream's step and sample counters, which only move forward:
        a rollback changes what the head knows, not how much of the stream has gone by.
        """
        with torch.no_grad():
            self.network.load_state_dict(state.network)
        self.optimizer.load_state_dict(_clone_optimizer_state(state.optimizer))
        self.generator.set_state(state.rng.clone())
        if counters:
            self.step = state.step
            self.samples_seen = state.samples_seen

    def checkpoint(
        self, meta: dict[str, Any] | None = None, *, state: HeadState | None = None
    ) -> Checkpoint:
        """The head as a version's contents; `state`: its state, already copied (never
        changed afterwards: the checkpoint holds its tensors)."""
        state = state or self.state()
        return Checkpoint(
            state.network,
            state.optimizer,
            state.rng,
            {
                "step": self.step,
                "samples_seen": self.samples_seen,
                **self._described(),
                **(meta or {}),
            },
        )

    def _described(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json")} if self.describe else {}

    def load_checkpoint(self, checkpoint: Checkpoint, *, counters: bool = True) -> None:
        self.load_state(self.state_from(checkpoint), counters=counters)

    def state_from(self, checkpoint: Checkpoint) -> HeadState:
        return HeadState(
            network={k: v.to(self.device) for k, v in checkpoint.network.items()},
            optimizer=checkpoint.optimizer,
            rng=checkpoint.rng,
            step=int(checkpoint.meta.get("step", 0)),
            samples_seen=int(checkpoint.meta.get("samples_seen", 0)),
        )


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


def _clone_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {
            index: {
                key: value.detach().clone() if isinstance(value, torch.Tensor) else value
                for key, value in entries.items()
            }
            for index, entries in state["state"].items()
        },
        "param_groups": copy.deepcopy(state["param_groups"]),
    }
