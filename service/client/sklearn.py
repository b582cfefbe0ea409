"""scikit-learn estimators backed by a Gradual service: `GradualClassifier`, `GradualRegressor`.

`fit` creates a fresh model on the service (deleting the one this estimator made before) and
streams the data to it for `epochs` shuffled passes; `partial_fit` creates it on the first call
and streams one pass per call. Afterwards the training head is checkpointed and served, so
`predict` answers with exactly what was trained. By default every row trains (`holdout` 0),
like `MLPClassifier` without early stopping; pass `training={"holdout": 0.1, "promote":
"best"}` to let the service hold rows out, stop early and serve its best version instead.

Class labels of any type map to class ids `0..k-1` (`classes_`) and back. The estimators work
in a `Pipeline` and in `cross_val_score`: each clone fits its own uniquely named model (unless
`model_name` is fixed, which suits one estimator, not clones). Models stay on the service after
the estimator is gone; `delete_model()` removes one.

    model = make_pipeline(StandardScaler(), GradualClassifier("http://127.0.0.1:8000"))
    model.fit(X_train, y_train).score(X_test, y_test)
"""

# scikit-learn names the data `X`; its estimators' signatures are kept here.
# ruff: noqa: N803, N806

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self

import httpx
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from service.client import GradualClient, GradualClientError

MAX_REQUEST_ROWS = 8192
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # well under the service's default body limit (64 MiB)


def _request_rows(features: int, batch_size: int) -> int:
    """Rows per partial-fit request: whole mini-batches, bounded in rows and bytes."""
    rows = min(MAX_REQUEST_ROWS, MAX_REQUEST_BYTES // (4 * max(features, 1)))
    return max(1, rows // batch_size) * batch_size


class _GradualEstimator(BaseEstimator):  # type: ignore[misc]
    _task = "regression"
    model_name_: str

    def __init__(
        self, base_url: str | None = None, *, model_name: str | None = None,
        hidden: tuple[int, ...] = (64,), activation: str = "relu", dropout: float = 0.0,
        optimizer: str = "adam", lr: float | None = None, batch_size: int = 32, epochs: int = 100,
        seed: int = 0, training: Mapping[str, Any] | None = None, token: str | None = None,
        client: GradualClient | httpx.Client | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.model_name = model_name
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.training = training
        self.token = token
        self.client = client

    # -- the service ----------------------------------------------------------------------

    @contextmanager
    def _gradual(self) -> Iterator[GradualClient]:
        """A client for one operation: the given one, or a fresh one closed afterwards, so the
        estimator itself holds no connection and pickles and clones cleanly."""
        if isinstance(self.client, GradualClient):
            yield self.client
            return
        with GradualClient(self.base_url, token=self.token, http=self.client) as gradual:
            yield gradual

    def _training_section(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "holdout": 0.0, "promote": "manual"} | dict(
            self.training or {}
        )

    def _create(self, features: int, outputs: int) -> None:
        """A fresh model: the one this estimator made before (if any) is deleted first."""
        self.delete_model()
        name = self.model_name or f"sklearn-{uuid.uuid4().hex[:16]}"
        spec = {
            "task": self._task, "inputs": features, "outputs": outputs,
            "hidden": list(self.hidden), "activation": self.activation, "dropout": self.dropout,
        }  # fmt: skip
        optimizer = {"name": self.optimizer} | ({} if self.lr is None else {"lr": self.lr})
        with self._gradual() as gradual:
            gradual.create(name, spec, optimizer, self._training_section(), seed=self.seed)
        self.model_name_ = name

    def delete_model(self) -> None:
        """Deletes the service's model that this estimator fitted, if it still exists."""
        name = getattr(self, "model_name_", None)
        if name is None:
            return
        with self._gradual() as gradual:
            try:
                gradual.delete(name)
            except GradualClientError as exc:
                if exc.status != httpx.codes.NOT_FOUND:
                    raise
        del self.model_name_

    def _learn(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Streams the batches, then serves the trained head."""
        with self._gradual() as gradual:
            gradual.stream(self.model_name_, batches)
            if self._training_section()["promote"] == "manual":
                version = gradual.checkpoint(self.model_name_)
                gradual.promote(self.model_name_, version.version)

    def _passes(
        self, X: np.ndarray, targets: np.ndarray, *, epochs: int = 1, shuffle: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`epochs` passes over the rows, reshuffled for each pass when `shuffle` (seeded, so
        fitting twice trains identically), cut into requests of whole mini-batches; passes
        run on into each other so that small data sets take few requests."""
        rng = np.random.default_rng(self.seed)
        size = _request_rows(X.shape[1], self.batch_size)
        pending = np.empty(0, dtype=np.int64)
        for _ in range(epochs):
            order = rng.permutation(X.shape[0]) if shuffle else np.arange(X.shape[0])
            pending = np.concatenate([pending, order])
            while pending.shape[0] >= size:
                rows, pending = pending[:size], pending[size:]
                yield X[rows], targets[rows]
        if pending.shape[0]:
            yield X[pending], targets[pending]

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_name_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with self._gradual() as gradual:
            return gradual.predict(self.model_name_, X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class GradualClassifier(ClassifierMixin, _GradualEstimator):  # type: ignore[misc]
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


class GradualRegressor(RegressorMixin, _GradualEstimator):  # type: ignore[misc]
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
