"""The asyncio (or trio) client: the same methods as `GradualClient`, awaited."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio
import httpx

from service.client import calls, streaming
from service.client.calls import Call
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
from service.client.retry import Outcome, RetryPolicy, Tally, wait_before_retry
from service.client.streaming import Batch, next_id, record, with_last_async
from service.client.sync import DEFAULT_URL, default_tls

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


class AsyncGradualClient:
    """A typed async client for a Gradual service; see `GradualClient` for the arguments.

    Example (against a running service)::

        async with AsyncGradualClient("http://127.0.0.1:8000") as gradual:
            report = await gradual.stream("iris", batches)
    """

    def __init__(
        self, base_url: str | None = None, *, token: str | None = None, timeout: float = 30.0,
        retry: RetryPolicy | None = None, http: httpx.AsyncClient | None = None,
    ) -> None:  # fmt: skip
        self.token = token
        self.retry = retry or RetryPolicy()
        self._owned = http is None
        self._http = http or httpx.AsyncClient(
            base_url=base_url or DEFAULT_URL, timeout=timeout, verify=default_tls()
        )
        self._prefix = (base_url or "").rstrip("/") if http is not None else ""

    async def __aenter__(self) -> AsyncGradualClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    # -- models ---------------------------------------------------------------------------

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

    # -- learning and serving -------------------------------------------------------------

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

    # -- versions and history -------------------------------------------------------------

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

    # -- transport ------------------------------------------------------------------------

    async def _send(self, call: Call[T], tally: Tally | None = None) -> T:
        tally = tally or Tally()
        attempt = 0
        while True:
            outcome = await self._attempt(call)
            wait = wait_before_retry(
                outcome, attempt=attempt, idempotent=call.idempotent, policy=self.retry,
                tally=tally,
            )  # fmt: skip
            if wait is None:
                return call.settle(outcome)
            await anyio.sleep(wait)
            attempt += 1

    async def _attempt(self, call: Call[Any]) -> Outcome:
        try:
            return await self._http.request(
                call.method, self._prefix + call.path, content=call.content,
                params=dict(call.params), headers=call.headers(self.token),
            )  # fmt: skip
        except httpx.TransportError as exc:
            return exc
