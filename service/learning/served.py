"""Served versions: immutable eval-mode copies of a network that predict reads without locks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.network import Network
from models.spec import NetworkSpec
from service.learning.compilation import CompiledForward


@dataclass(frozen=True)
class Predictions:
    predictions: list[Any]
    probabilities: list[list[float]] | None


class ServedModel:
    """One version's weights, never modified after construction; swapping one is atomic."""

    def __init__(self, version: int, network: Network, *, compiled: bool = False) -> None:
        self.version = version
        self.network = network.eval().requires_grad_(False)
        # Only the forward pass is compiled: `network` keeps its own state_dict keys.
        self._forward = CompiledForward(self.network) if compiled else self.network

    @classmethod
    def from_state(
        cls, spec: NetworkSpec, version: int, state: dict[str, torch.Tensor],
        device: torch.device, *, compiled: bool = False,
    ) -> ServedModel:  # fmt: skip
        # Built without initializing weights it would overwrite (a seeded init costs more
        # than the copy), then given its own copy of `state`: versions never share tensors.
        network = Network(spec, device="meta")
        copied = {k: v.to(device, copy=True) for k, v in state.items()}
        network.load_state_dict(copied, assign=True)
        return cls(version, network, compiled=compiled)

    @property
    def spec(self) -> NetworkSpec:
        return self.network.spec

    def outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            outputs: torch.Tensor = self._forward(inputs)
        return outputs


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host rows → device; on a GPU through pinned memory with an asynchronous copy."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def decode_outputs(spec: NetworkSpec, outputs: torch.Tensor) -> Predictions:
    """Logits or values → what a client reads: labels, probabilities or numbers."""
    if spec.task == "classification":
        probabilities = torch.softmax(outputs, dim=1)
        labels = probabilities.argmax(dim=1)
        return Predictions(labels.tolist(), probabilities.tolist())
    if spec.task == "binary":
        positive = torch.sigmoid(outputs[:, 0])
        pairs = torch.stack([1.0 - positive, positive], dim=1)
        return Predictions((positive >= 0.5).long().tolist(), pairs.tolist())
    values = outputs[:, 0] if spec.outputs == 1 else outputs
    return Predictions(values.tolist(), None)
