"""How a client sends a `Call`: one connection, retried as the `RetryPolicy` says.

`Connection` holds what both clients share (the httpx client, owned or lent, the token, the
retry policy, the path prefix) and builds each request; `Transport` sends it blocking and
`AsyncTransport` awaited. The endpoint groups of each client (`sync.py`, `aio.py`) build
their `Call`s in `calls.py` and send them through `_send`.
"""

from __future__ import annotations

import functools
import ssl
import time
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import httpx

from service.client.calls import Call
from service.client.closing import Closing
from service.client.retry import Attempts, Outcome, RetryPolicy, Tally

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
DEFAULT_URL = "http://127.0.0.1:8000"


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS context, made once: loading the CA bundle takes tens of
    milliseconds, too much for short-lived clients (the scikit-learn estimators make one per
    operation)."""
    return httpx.create_ssl_context()


class Connection(Generic[H]):
    """A service's address and credentials, and the httpx client that reaches it.

    `http` is an httpx client to send through instead of building one (its own base URL
    applies unless `base_url` is given; closing the Gradual client leaves it open)."""

    def __init__(
        self, base_url: str | None = None, *, token: str | None = None, timeout: float = 30.0,
        retry: RetryPolicy | None = None, http: H | None = None,
    ) -> None:  # fmt: skip
        self.token = token
        self.retry = retry or RetryPolicy()
        self._owned = http is None
        self._http: H = http or self._open(base_url or DEFAULT_URL, timeout)
        self._prefix = (base_url or "").rstrip("/") if http is not None else ""

    def _open(self, base_url: str, timeout: float) -> H:
        raise NotImplementedError

    def _attempts(self, call: Call[Any], tally: Tally | None) -> Attempts:
        return Attempts(self.retry, call.idempotent, tally or Tally())

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        """httpx's `request` arguments for `call`."""
        return {
            "method": call.method, "url": self._prefix + call.path, "content": call.content,
            "params": dict(call.params), "headers": call.headers(self.token),
        }  # fmt: skip


class Transport(Closing, Connection[httpx.Client]):
    """Sends blocking, sleeping between tries; `with` closes the httpx client it owns."""

    def _open(self, base_url: str, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=base_url, timeout=timeout, verify=default_tls())

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _send(self, call: Call[T], tally: Tally | None = None) -> T:
        attempts = self._attempts(call, tally)
        outcome = self._attempt(call)
        while (wait := attempts.wait_after(outcome)) is not None:
            time.sleep(wait)
            outcome = self._attempt(call)
        return call.settle(outcome)

    def _attempt(self, call: Call[Any]) -> Outcome:
        try:
            return self._http.request(**self._request(call))
        except httpx.TransportError as exc:
            return exc


class AsyncTransport(Connection[httpx.AsyncClient]):
    """Sends awaited (asyncio or trio), sleeping between tries without blocking the loop;
    `async with` closes the httpx client it owns."""

    def _open(self, base_url: str, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=default_tls())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _send(self, call: Call[T], tally: Tally | None = None) -> T:
        attempts = self._attempts(call, tally)
        outcome = await self._attempt(call)
        while (wait := attempts.wait_after(outcome)) is not None:
            await anyio.sleep(wait)
            outcome = await self._attempt(call)
        return call.settle(outcome)

    async def _attempt(self, call: Call[Any]) -> Outcome:
        try:
            return await self._http.request(**self._request(call))
        except httpx.TransportError as exc:
            return exc
