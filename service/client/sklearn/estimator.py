"""What the classifier and the regressor share: a model on the service that the estimator
creates, trains by streaming, serves from, and (when it named it) deletes."""

# scikit-learn names the data `X`; its estimators' signatures are kept here.
# ruff: noqa: N803, N806

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from service.client import GradualClient, GradualClientError, RetryPolicy
from service.client.closing import Closing

MAX_REQUEST_ROWS = 8192
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # well under the service's default body limit (64 MiB)


def _request_rows(features: int, batch_size: int) -> int:
    """Rows per partial-fit request: whole mini-batches, bounded in rows and bytes."""
    rows = min(MAX_REQUEST_ROWS, MAX_REQUEST_BYTES // (4 * max(features, 1)))
    return max(1, rows // batch_size) * batch_size


@dataclass(frozen=True)
class _Service:
    """Where an estimator's models live; holds no connection (a finalizer keeps one of these,
    never the estimator)."""

    base_url: str | None
    token: str | None
    client: GradualClient | httpx.Client | None

    @contextmanager
    def open(self, retry: RetryPolicy | None = None) -> Iterator[GradualClient]:
        """A client for one operation: the given one, or a fresh one closed afterwards."""
        if isinstance(self.client, GradualClient):
            yield self.client
            return
        with GradualClient(
            self.base_url, token=self.token, http=self.client, retry=retry
        ) as gradual:
            yield gradual


def _delete_quietly(service: _Service, name: str) -> None:
    """A finalizer's deletion: it may run at interpreter exit, after the service or the given
    httpx client is gone, so it gives up at once and raises nothing."""
    try:
        with service.open(RetryPolicy(attempts=1)) as gradual:
            gradual.delete(name)
    except (GradualClientError, RuntimeError):  # httpx: "the client has been closed"
        pass


class GradualEstimator(Closing, BaseEstimator):  # type: ignore[misc]
    """The base of `GradualClassifier` and `GradualRegressor`; its parameters are theirs."""

    _task = "regression"
    model_name_: str
    _finalizer: weakref.finalize[[_Service, str], Any]

    def __init__(
        self, base_url: str | None = None, *, model_name: str | None = None,
        hidden: tuple[int, ...] = (64,), activation: str = "relu", dropout: float = 0.0,
        optimizer: str = "adam", lr: float | None = None, batch_size: int = 32, epochs: int = 100,
        seed: int = 0, training: Mapping[str, Any] | None = None, token: str | None = None,
        client: GradualClient | httpx.Client | None = None,
    ) -> None:  # fmt: skip
        """Stores the parameters as given, as scikit-learn's `get_params` and `clone` expect;
        they are checked when fitting."""
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
        """A client for one operation, so the estimator itself holds no connection and pickles
        and clones cleanly."""
        with self._service().open() as gradual:
            yield gradual

    def _service(self) -> _Service:
        return _Service(self.base_url, self.token, self.client)

    # -- the temporary model's lifetime ---------------------------------------------------

    def close(self) -> None:
        """Deletes the temporary model this estimator fitted (a fixed `model_name` is kept);
        the estimator is then unfitted."""
        if self.model_name is None:
            self.delete_model()

    def __getstate__(self) -> dict[str, Any]:
        """A pickled (or deep-copied) estimator refers to the same model but does not own it:
        the original's finalizer stays behind."""
        state = dict(super().__getstate__())
        state.pop("_finalizer", None)
        return state

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
        if self.model_name is None:  # temporary: deleted when the estimator is collected
            self._finalizer = weakref.finalize(self, _delete_quietly, self._service(), name)

    def delete_model(self) -> None:
        """Deletes the service's model that this estimator fitted, if it still exists."""
        name = getattr(self, "model_name_", None)
        if name is None:
            return
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
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
