"""The blocking client: `GradualClient`, its endpoints in three groups over one transport."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from service.client import calls, streaming
from service.client.results import (
    Event,
    FitResult,
    Model,
    Prediction,
    Queued,
    StreamReport,
    Version,
    probabilities_of,
)
from service.client.retry import Tally
from service.client.streaming import Batch, next_id, record, with_last
from service.client.transport import Transport

if TYPE_CHECKING:
    import numpy as np


class Models(Transport):
    """Creating, reading, listing and deleting models."""

    def create(
        self, name: str, spec: Mapping[str, Any], optimizer: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None, seed: int = 0,
    ) -> Model:  # fmt: skip
        return self._send(calls.create(name, spec, optimizer, training, seed))

    def get(self, name: str) -> Model:
        return self._send(calls.get(name))

    def list(self) -> builtins.list[Model]:
        return self._send(calls.list_models())

    def delete(self, name: str) -> None:
        self._send(calls.delete(name))


class Learning(Transport):
    """Training on batches, streams of batches, and predicting."""

    @overload
    def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None,
        wait: Literal[True] = True,
    ) -> FitResult: ...  # fmt: skip
    @overload
    def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None, wait: bool = True
    ) -> FitResult | Queued: ...
    def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None, wait: bool = True
    ) -> FitResult | Queued:
        """Trains on one batch (lists, NumPy arrays or pandas objects). With `wait=False` the
        service queues it and answers at once (`Queued`). A `batch_id` is applied at most
        once: a resend answers `duplicate=True`."""
        return self._send(calls.partial_fit(name, inputs, targets, batch_id=batch_id, wait=wait))

    def prediction(self, name: str, inputs: Any, version: int | None = None) -> Prediction:
        """The whole predict answer: version, predictions and probabilities."""
        return self._send(calls.predict(name, inputs, version=version))

    def predict(self, name: str, inputs: Any, version: int | None = None) -> np.ndarray:
        """Class ids (classification, binary) or values (regression) of the served version
        (or of `version`)."""
        import numpy as np

        return np.asarray(self.prediction(name, inputs, version).predictions)

    def predict_proba(self, name: str, inputs: Any, version: int | None = None) -> np.ndarray:
        """Class probabilities, one row per input row; classifiers only."""
        return probabilities_of(self.prediction(name, inputs, version))

    def stream(
        self, name: str, batches: Iterable[Batch], batch_ids: Iterable[str] | None = None, *,
        id_prefix: str | None = None, wait_each: bool = False,
    ) -> StreamReport:  # fmt: skip
        """Sends `(X, y)` batches, each with an id (`batch_ids`, or `id_prefix-N`), retrying
        429s and lost connections without ever applying a batch twice. Unless `wait_each`,
        batches are queued (202) and only the last is waited for: when this returns, every
        batch has been applied (a step the service refused is an event, not an exception)."""
        report, tally = StreamReport(), Tally()
        ids = streaming.batch_ids(batch_ids, id_prefix)
        for (inputs, targets), last in with_last(batches):
            batch_id = next_id(ids)
            call = calls.partial_fit(
                name, inputs, targets, batch_id=batch_id, wait=wait_each or last
            )
            record(report, batch_id, self._send(call, tally))
        report.throttled, report.reconnects = tally.throttled, tally.reconnects
        return report


class Versions(Transport):
    """A model's versions, the pointers that serve them, and its history."""

    def versions(self, name: str) -> builtins.list[Version]:
        return self._send(calls.versions(name))

    def version(self, name: str, number: int) -> Version:
        return self._send(calls.version(name, number))

    def checkpoint(self, name: str) -> Version:
        """Records the training head as a new version now."""
        return self._send(calls.checkpoint(name))

    def rollback(self, name: str, version: int) -> Version:
        """Serves `version` and resets the training head to it."""
        return self._send(calls.rollback(name, version))

    def promote(self, name: str, version: int) -> Version:
        """Serves `version`; the training head carries on."""
        return self._send(calls.promote(name, version))

    def events(self, name: str, since: int = 0) -> builtins.list[Event]:
        return self._send(calls.events(name, since))


class GradualClient(Models, Learning, Versions):
    """A typed client for a Gradual service.

    `http` is an `httpx.Client` to send through instead of building one (its own base URL
    applies unless `base_url` is given; it is left open by `close`). `token` goes out as
    `Authorization: Bearer`. Errors raise `GradualClientError`.

    Example (against a running service)::

        with GradualClient("http://127.0.0.1:8000") as gradual:
            gradual.create("iris", {"task": "classification", "inputs": 4, "outputs": 3})
            gradual.partial_fit("iris", X, y)
            labels = gradual.predict("iris", X)
    """

    def __deepcopy__(self, memo: dict[int, object]) -> GradualClient:
        """A client is a handle on a service, not data: copies share it (as scikit-learn's
        `clone` does with an estimator's parameters)."""
        return self
