"""The per-model `training` section: mini-batches, the validation buffer and its controls."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from models.spec import StrictModel, Task
from service.learning.early_stopping import Mode, StopperConfig
from service.learning.schedule import LrSchedule, ScheduleConfig

Monitor = Literal["val_loss", "val_accuracy", "val_mae", "val_r2"]
MONITORS_BY_TASK: dict[str, set[str]] = {
    "classification": {"val_loss", "val_accuracy"},
    "binary": {"val_loss", "val_accuracy"},
    "regression": {"val_loss", "val_mae", "val_r2"},
}


# Fields added after models were already stored, with the values that reproduce how those
# models learned before them: a stored section without them must replay its log bit for bit.
BEFORE_REPLAY: dict[str, object] = {"replay": 0, "steps_per_batch": 1, "lr_schedule": "constant"}


class TrainingConfig(StrictModel):
    batch_size: int = Field(default=64, ge=1, le=65_536, description="Rows per optimizer step.")
    augment_noise: float = Field(
        default=0.0, ge=0.0, le=100.0,
        description="Std of Gaussian noise added to training inputs (data augmentation).",
    )  # fmt: skip
    holdout: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Fraction of streamed rows kept for validation."
    )
    buffer_size: int = Field(default=2000, ge=1, le=1_000_000, description="Validation rows kept.")
    eval_every: int = Field(default=4, ge=1, description="Optimizer steps per evaluation round.")
    monitor: Monitor = "val_loss"
    mode: Literal["auto", "min", "max"] = Field(
        default="auto", description="auto: min for val_loss and val_mae, max otherwise."
    )
    min_delta: float = Field(default=0.0, ge=0.0)
    patience: int = Field(default=10, ge=1, description="Rounds without improvement before a stop.")
    baseline: float | None = None
    start_from: int = Field(default=0, ge=0, description="Warm-up steps before monitoring.")
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    restore_best: bool = True
    rollback_tolerance: float | None = Field(default=0.2, ge=0.0)
    promote: Literal["best", "latest", "manual"] = "best"
    resume_on_drift: bool = True
    drift_tolerance: float = Field(default=0.1, ge=0.0)
    keep_versions: int = Field(default=20, ge=2, le=100_000)
    replay: int = Field(
        default=2000, ge=0, le=1_000_000,
        description="Recent training rows kept for replay beside each new batch; 0: off.",
    )  # fmt: skip
    replay_ratio: float = Field(
        default=3.0, ge=0.0, le=16.0, description="Replayed rows per new row in each step."
    )
    steps_per_batch: int = Field(
        default=2, ge=1, le=64, description="Optimizer steps per mini-batch (replay redrawn)."
    )
    lr_schedule: LrSchedule = "constant"
    warmup_steps: int = Field(default=100, ge=1, description="warmup: steps to reach `lr`.")
    lr_factor: float = Field(default=0.5, gt=0.0, lt=1.0, description="reduce_on_plateau.")
    lr_patience: int = Field(
        default=3, ge=1, description="reduce_on_plateau: rounds without improvement."
    )
    min_lr: float = Field(default=1e-5, ge=0.0, description="reduce_on_plateau's floor.")

    @classmethod
    def stored(cls, data: dict[str, object]) -> Self:
        """A section read back from a snapshot or the log (not from a client)."""
        return cls.model_validate(BEFORE_REPLAY | data)

    @property
    def resolved_mode(self) -> Mode:
        if self.mode != "auto":
            return self.mode
        return "min" if self.monitor in {"val_loss", "val_mae"} else "max"

    @property
    def metric(self) -> str:
        """The key of `monitor` in an evaluation's metrics (`val_loss` → `loss`)."""
        return self.monitor.removeprefix("val_")

    def stopper(self) -> StopperConfig:
        return StopperConfig(
            mode=self.resolved_mode, min_delta=self.min_delta, patience=self.patience,
            baseline=self.baseline, start_from=self.start_from,
            stopping_threshold=self.stopping_threshold,
            divergence_threshold=self.divergence_threshold,
        )  # fmt: skip

    def schedule(self) -> ScheduleConfig:
        return ScheduleConfig(
            self.lr_schedule, self.warmup_steps, self.lr_factor, self.lr_patience, self.min_lr
        )

    def check_task(self, task: Task) -> Self:
        if self.monitor not in MONITORS_BY_TASK[task]:
            allowed = ", ".join(sorted(MONITORS_BY_TASK[task]))
            raise ValueError(f"monitor {self.monitor!r} does not fit task {task!r} ({allowed})")
        return self

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Self:
        low, high = self.stopping_threshold, self.divergence_threshold
        if low is not None and high is not None and low == high:
            raise ValueError("stopping_threshold and divergence_threshold must differ")
        return self
