"""A training head's whole state as plain tensors and JSON: what the weight store keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Checkpoint:
    """A training head frozen at one step, on the CPU."""

    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch's optimizer state_dict layout
    rng: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. the validation buffer
