"""Activation functions by name."""

from collections.abc import Callable
from typing import Literal

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}

# The gain torch.nn.init should use for each activation (kaiming needs a nonlinearity name).
Nonlinearity = Literal["relu", "leaky_relu", "tanh", "sigmoid", "selu", "linear"]
KAIMING_NONLINEARITY: dict[str, Nonlinearity] = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "selu": "selu",
}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()
