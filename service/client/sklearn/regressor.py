"""`GradualRegressor`: one output per target column."""

# scikit-learn names the data `X`; its estimators' signatures are kept here.
# ruff: noqa: N803, N806

from __future__ import annotations

from typing import Any, Self

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import validate_data

from service.client.sklearn.estimator import GradualEstimator


class GradualRegressor(RegressorMixin, GradualEstimator):  # type: ignore[misc]
    """A neural-network regressor trained and served by a Gradual service (one output per
    target column); the parameters are those of `GradualClassifier`."""

    _task = "regression"
    n_outputs_: int
    _column_targets: bool

    def fit(self, X: Any, y: Any) -> Self:
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True, multi_output=True)
        self._targets_shape(y, first=True)
        self._create(X.shape[1], self.n_outputs_)
        self._learn(self._passes(X, y.astype(np.float32), epochs=self.epochs, shuffle=True))
        return self

    def partial_fit(self, X: Any, y: Any) -> Self:
        first = not hasattr(self, "model_name_")
        X, y = validate_data(
            self, X, y, dtype=np.float32, y_numeric=True, multi_output=True, reset=first
        )
        self._targets_shape(y, first=first)
        if first:
            self._create(X.shape[1], self.n_outputs_)
        self._learn(self._passes(X, y.astype(np.float32)))
        return self

    def predict(self, X: Any) -> np.ndarray:
        values = self._outputs(X).astype(np.float64)
        return values.reshape(-1, self.n_outputs_) if self._column_targets else values

    def _targets_shape(self, y: np.ndarray, *, first: bool) -> None:
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if not first and outputs != self.n_outputs_:
            raise ValueError(f"y has {outputs} targets per row; the model has {self.n_outputs_}")
        self.n_outputs_ = outputs
        self._column_targets = y.ndim == 2

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
