"""The asyncio (or trio) client: the same methods as `GradualClient`, awaited, in the same
three groups over one transport."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, Iterable, Mapping
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
from service.client.streaming import Batch, next_id, record, with_last_async
from service.client.transport import AsyncTransport

if TYPE_CHECKING:
    import numpy as np


class AsyncModels(AsyncTransport):
    """Creating, reading, listing and deleting models."""

    async def create(
        self, name: str, spec: Mapping[str, Any], optimizer: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None, seed: int = 0,
    ) -> Model:  # fmt: skip
        return await self._send(calls.create(name, spec, optimizer, training, seed))

    async def get(self, name: str) -> Model:
        return await self._send(calls.get(name))

    async def list(self) -> builtins.list[Model]:
        return await self._send(calls.list_models())

    async def delete(self, name: str) -> None:
        await self._send(calls.delete(name))


class AsyncLearning(AsyncTransport):
    """Training on batches, streams of batches, and predicting."""

    @overload
    async def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None,
        wait: Literal[True] = True,
    ) -> FitResult: ...  # fmt: skip
    @overload
    async def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None, wait: bool = True
    ) -> FitResult | Queued: ...
    async def partial_fit(
        self, name: str, inputs: Any, targets: Any, batch_id: str | None = None, wait: bool = True
    ) -> FitResult | Queued:
        call = calls.partial_fit(name, inputs, targets, batch_id=batch_id, wait=wait)
        return await self._send(call)

    async def prediction(self, name: str, inputs: Any, version: int | None = None) -> Prediction:
        return await self._send(calls.predict(name, inputs, version=version))

    async def predict(self, name: str, inputs: Any, version: int | None = None) -> np.ndarray:
        import numpy as np

        return np.asarray((await self.prediction(name, inputs, version)).predictions)

    async def predict_proba(self, name: str, inputs: Any, version: int | None = None) -> np.ndarray:
        return probabilities_of(await self.prediction(name, inputs, version))

    async def stream(
        self, name: str, batches: Iterable[Batch] | AsyncIterable[Batch],
        batch_ids: Iterable[str] | None = None, *, id_prefix: str | None = None,
        wait_each: bool = False,
    ) -> StreamReport:  # fmt: skip
        """`GradualClient.stream`, also from an async iterator of batches."""
        report, tally = StreamReport(), Tally()
        ids = streaming.batch_ids(batch_ids, id_prefix)
        async for (inputs, targets), last in with_last_async(batches):
            batch_id = next_id(ids)
            call = calls.partial_fit(
                name, inputs, targets, batch_id=batch_id, wait=wait_each or last
            )
            record(report, batch_id, await self._send(call, tally))
        report.throttled, report.reconnects = tally.throttled, tally.reconnects
        return report


class AsyncVersions(AsyncTransport):
    """A model's versions, the pointers that serve them, and its history."""

    async def versions(self, name: str) -> builtins.list[Version]:
        return await self._send(calls.versions(name))

    async def version(self, name: str, number: int) -> Version:
        return await self._send(calls.version(name, number))

    async def checkpoint(self, name: str) -> Version:
        return await self._send(calls.checkpoint(name))

    async def rollback(self, name: str, version: int) -> Version:
        return await self._send(calls.rollback(name, version))

    async def promote(self, name: str, version: int) -> Version:
        return await self._send(calls.promote(name, version))

    async def events(self, name: str, since: int = 0) -> builtins.list[Event]:
        return await self._send(calls.events(name, since))


class AsyncGradualClient(AsyncModels, AsyncLearning, AsyncVersions):
    """A typed async client for a Gradual service; see `GradualClient` for the arguments.

    Example (against a running service)::

        async with AsyncGradualClient("http://127.0.0.1:8000") as gradual:
            report = await gradual.stream("iris", batches)
    """
