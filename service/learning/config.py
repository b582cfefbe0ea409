"""The per-model `training` section."""

from __future__ import annotations

from pydantic import Field

from models.spec import StrictModel


class TrainingConfig(StrictModel):
    batch_size: int = Field(
        default=64, ge=1, le=65_536, description="Rows per optimizer step (mini-batch size)."
    )
    augment_noise: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Std of Gaussian noise added to training inputs (data augmentation).",
    )
