"""`GradualClassifier`: class labels of any type, as class ids `0..k-1` on the service."""

# scikit-learn names the data `X`; its estimators' signatures are kept here.
# ruff: noqa: N803, N806

from __future__ import annotations

from typing import Any, Self

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from service.client.sklearn.estimator import GradualEstimator


class GradualClassifier(ClassifierMixin, GradualEstimator):  # type: ignore[misc]
    """A neural-network classifier trained and served by a Gradual service.

    Parameters are the network (`hidden` widths, `activation`, `dropout`), the optimizer
    (`optimizer` name, `lr`: None for the service's default), the mini-batch size, `epochs`
    (passes over the data in `fit`), `seed`, extra `training` fields for the service, and
    where the service is: `base_url` and `token`, or a `client` (a `GradualClient`, or an
    `httpx.Client` — which cannot be cloned, so prefer a `GradualClient` inside
    `cross_val_score`).
    """

    _task = "classification"
    classes_: np.ndarray

    def fit(self, X: Any, y: Any) -> Self:
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, ids = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError("Classifier can't train when only one class is present.")
        self._create(X.shape[1], self.classes_.shape[0])
        self._learn(self._passes(X, ids, epochs=self.epochs, shuffle=True))
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> Self:
        """One pass over `X`; the first call needs every class in `classes`."""
        first = not hasattr(self, "model_name_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if (
            classes is not None
            and not first
            and not np.array_equal(np.unique(classes), self.classes_)
        ):
            raise ValueError(f"classes={classes!r} is not the same as on the first call")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(classes)
            if self.classes_.shape[0] < 2:
                raise ValueError("Classifier can't train when only one class is present.")
            self._create(X.shape[1], self.classes_.shape[0])
        self._learn(self._passes(X, self._class_ids(y)))
        return self

    def predict(self, X: Any) -> np.ndarray:
        ids = self._outputs(X).astype(np.int64)
        labels: np.ndarray = self.classes_[ids]
        return labels

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities per class, columns in the order of `classes_`."""
        check_is_fitted(self, "model_name_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with self._gradual() as gradual:
            return gradual.predict_proba(self.model_name_, X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            logs: np.ndarray = np.log(self.predict_proba(X))
        return logs

    def _class_ids(self, y: np.ndarray) -> np.ndarray:
        ids = np.searchsorted(self.classes_, y).clip(0, self.classes_.shape[0] - 1)
        unknown = self.classes_[ids] != y
        if unknown.any():
            raise ValueError(f"y contains labels not in classes_: {np.unique(y[unknown])!r}")
        return ids
