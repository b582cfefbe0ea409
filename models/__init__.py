"""Networks built from a declarative spec: never from code or pickles a client sends."""

from models.network import Network, build_network
from models.spec import NetworkSpec, OptimizerSpec

__all__ = ["Network", "NetworkSpec", "OptimizerSpec", "build_network"]
