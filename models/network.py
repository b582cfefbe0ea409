"""The network: optional standardizer, then Linear → activation → dropout per hidden layer, then
(regression) the target standardizer's inverse."""

from __future__ import annotations

import torch
from torch import nn

from models.activations import KAIMING_NONLINEARITY, Nonlinearity, make_activation
from models.normalizer import OnlineStandardizer
from models.spec import NetworkSpec


class SeededDropout(nn.Module):
    """Dropout drawing its masks from the network's own generator, so a replayed stream is exact."""

    def __init__(self, p: float, owner: Network) -> None:
        super().__init__()
        self.p = p
        # A plain attribute, not a submodule: avoids a module cycle.
        self._owner = [owner]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self._owner[0].generator)
        return x * mask / keep


class Network(nn.Module):
    """A multilayer perceptron built from a `NetworkSpec`; `forward` returns logits or values."""

    def __init__(self, spec: NetworkSpec, *, device: torch.device | str | None = None) -> None:
        """`device="meta"`: the structure alone, for weights assigned afterwards (passed to
        each layer: cheaper than a `torch.device` context, which intercepts every call)."""
        super().__init__()
        self.spec = spec
        self.generator: torch.Generator | None = None
        self.normalizer = OnlineStandardizer(spec.inputs, device) if spec.normalize else None
        regression = spec.task == "regression" and spec.normalize_target
        # The last layer answers in standardized target units; `forward` restores them.
        self.target_normalizer = OnlineStandardizer(spec.outputs, device) if regression else None
        layers: list[nn.Module] = []
        width = spec.inputs
        for neurons in spec.hidden:
            layers.append(nn.Linear(width, neurons, device=device))
            layers.append(make_activation(spec.activation))
            if spec.dropout > 0.0:
                layers.append(SeededDropout(spec.dropout, self))
            width = neurons
        layers.append(nn.Linear(width, spec.outputs, device=device))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, inputs) -> (N, outputs)
        if self.normalizer is not None:
            x = self.normalizer(x)
        out: torch.Tensor = self.layers(x)
        if self.target_normalizer is not None:
            out = self.target_normalizer.restore(out)
        return out

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]


def build_network(spec: NetworkSpec, *, seed: int, device: torch.device | str = "cpu") -> Network:
    """Builds the network with weights and biases initialized from `seed` alone."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear's default init draws from the global generator
        network = Network(spec)
    _initialize(network, spec, generator)
    network.to(device)
    network.generator = torch.Generator(device=torch.device(device)).manual_seed(seed)
    return network


def _initialize(network: Network, spec: NetworkSpec, generator: torch.Generator) -> None:
    if spec.init == "default":
        return
    nonlinearity: Nonlinearity = KAIMING_NONLINEARITY.get(spec.activation, "linear")
    for layer in network.linear_layers():
        weight = layer.weight
        with torch.no_grad():
            if spec.init == "xavier_uniform":
                nn.init.xavier_uniform_(weight, generator=generator)
            elif spec.init == "xavier_normal":
                nn.init.xavier_normal_(weight, generator=generator)
            elif spec.init == "kaiming_uniform":
                nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity, generator=generator)
            elif spec.init == "kaiming_normal":
                nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity, generator=generator)
            else:
                nn.init.orthogonal_(weight, generator=generator)
            layer.bias.zero_()
