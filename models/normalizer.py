"""An online standardizer of features (or regression targets): running mean and variance,
updated by training batches only."""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-8


class OnlineStandardizer(nn.Module):
    """Standardizes features with statistics merged batch by batch (Chan et al.'s parallel update).

    The statistics are buffers, so they are saved with the weights and restored with them;
    `update` is called by the trainer, never by `forward`, so predict cannot move them.
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def __init__(self, features: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        # float64 keeps the merge exact enough over millions of rows.
        f64 = {"dtype": torch.float64, "device": device}
        self.register_buffer("count", torch.zeros((), **f64))  # type: ignore[arg-type]
        self.register_buffer("mean", torch.zeros(features, **f64))  # type: ignore[arg-type]
        self.register_buffer("m2", torch.zeros(features, **f64))  # type: ignore[arg-type]
        # The statistics change once a training batch, the forward pass runs several times a
        # step: its mean and scale are kept until a statistic changes (any in-place change
        # bumps a tensor's version; a replaced tensor is another object).
        self._held: tuple[object, ...] = ()
        self._standardizing: tuple[torch.Tensor, torch.Tensor, bool] | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        batch = x.to(torch.float64)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(dim=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(dim=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled() or torch.compiler.is_compiling():
            mean, scale, seen = self._mean_and_scale(x.dtype)  # nothing kept from here
        else:
            mean, scale, seen = self._kept_mean_and_scale(x.dtype)
        # Before any training row there is no yardstick: every feature reads as its (unknown)
        # mean, so raw values in the hundreds of thousands cannot answer far outside anything.
        if not seen:
            return torch.zeros_like(x)
        return (x - mean) * scale

    def _kept_mean_and_scale(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, bool]:
        stats = (self.count, self.mean, self.m2)
        held = (*stats, *(t._version for t in stats), dtype)
        if (
            self._standardizing is None
            or len(held) != len(self._held)
            or any(
                a is not b if isinstance(a, torch.Tensor) else a != b
                for a, b in zip(held, self._held, strict=True)
            )
        ):
            self._standardizing, self._held = self._mean_and_scale(dtype), held
        return self._standardizing

    def _mean_and_scale(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, bool]:
        variance = self.m2 / self.count.clamp(min=1.0)
        scale = torch.rsqrt(variance + EPS)
        # Until a feature has varied, leave its scale alone rather than blowing it up.
        scale = torch.where(variance > EPS, scale, torch.ones_like(scale))
        return self.mean.to(dtype), scale.to(dtype), bool(self.count > 0)

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        """Targets → standardized units (the inverse of `restore`)."""
        return (y - self.mean.to(y.dtype)) / self._std().to(y.dtype)

    def restore(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized outputs → target units: z × std + mean (the identity before any row)."""
        return z * self._std().to(z.dtype) + self.mean.to(z.dtype)

    def _std(self) -> torch.Tensor:
        variance = self.m2 / self.count.clamp(min=1.0)
        return torch.where(variance > EPS, torch.sqrt(variance), torch.ones_like(variance))
