"""Optional `torch.compile` of forward passes (`GRADUAL_COMPILE`), eager wherever it fails.

`predict` compiles served versions' forward passes, `all` the training head's too. Modules are
compiled with `dynamic=True`, so a new batch size does not recompile (sizes 0 and 1 are still
specialized: a first single-row batch compiles once more). Versions of one spec share the code
compiled for the first, since parameters are graph inputs, not constants.

The compiled module only runs the forward pass: the original module stays the one whose
`state_dict` is saved and loaded, so weights never carry `OptimizedModule`'s `_orig_mod.` keys.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch._dynamo.eval_frame import is_dynamo_supported

log = logging.getLogger("gradual.compile")

CompileMode = Literal["off", "predict", "all"]
Backend = str | Callable[..., object]


def effective_mode(mode: CompileMode, device: torch.device) -> CompileMode:
    """`mode`, or "off" (with one warning naming the reason) when compiling cannot work here."""
    if mode == "off":
        return mode
    reason = unavailable(device)
    if reason is not None:
        log.warning("GRADUAL_COMPILE=%s ignored, running eager: %s", mode, reason)
        return "off"
    return mode


def unavailable(device: torch.device) -> str | None:
    """Why the default backend (inductor) cannot compile for `device`, or None when it can."""
    if not is_dynamo_supported():
        return "TorchDynamo does not support this Python"
    try:
        # Imported once here rather than inside the first request (it takes a second or two);
        # torch's own deprecation warnings on the way are not ours to show.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch._inductor import compile_fx  # noqa: F401
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()  # inductor writes C++ for the CPU: raises when none is found
        elif device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return "Triton is not installed"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class CompiledForward:
    """`network`'s forward pass through `torch.compile`; after a failure, eager for good.

    Compiling happens at the first call (and at the first call of a new shape class), so a
    failure shows there: it is logged once, the pass is rerun eagerly, and the network is
    never compiled again. A request never fails because of compiling.
    """

    def __init__(self, network: nn.Module, *, backend: Backend = "inductor") -> None:
        self.network = network
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.failure: str | None = None  # why it runs eagerly, once it does
        try:
            self.compiled = torch.compile(network, backend=backend, dynamic=True)
        except Exception as exc:  # e.g. an unknown backend name
            self._give_up(exc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.compiled
        if compiled is None:
            out: torch.Tensor = self.network(x)
            return out
        # A pass that fails half-way may have drawn dropout masks: the eager rerun must draw
        # the same ones, or a replay of the log would not be exact.
        generator = self._dropout_generator()
        rng = generator.get_state() if generator is not None else None
        try:
            return compiled(x)
        except Exception as exc:
            self._give_up(exc)
            if generator is not None and rng is not None:
                generator.set_state(rng)
            out = self.network(x)
            return out

    def _dropout_generator(self) -> torch.Generator | None:
        generator: torch.Generator | None = getattr(self.network, "generator", None)
        return generator if self.network.training else None

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def _give_up(self, exc: Exception) -> None:
        self.compiled = None
        if self.failure is None:  # two threads may fail together: one warning is enough
            self.failure = f"{type(exc).__name__}: {_first_line(exc)}"
            log.warning("torch.compile failed, running this network eagerly: %s", self.failure)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
