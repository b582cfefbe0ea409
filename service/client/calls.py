"""Every endpoint as a `Call`: the request to send and how to read its answer.

Pure (no I/O), so the sync and the async client share it and differ only in how they send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from service.client.encoding import (
    JSON,
    SAFETENSORS,
    inputs_array,
    is_array_data,
    json_body,
    targets_array,
    tensors_body,
)
from service.client.errors import GradualClientError, GradualConnectionError
from service.client.results import (
    Event,
    FitResult,
    Model,
    Prediction,
    Queued,
    Version,
    parse,
    parse_list,
)
from service.client.retry import Outcome

T = TypeVar("T")
MODELS = "/v1/models"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    content: bytes | None = None
    media_type: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False  # safe to resend when an answer may have been lost

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"accept": JSON}
        if self.media_type:
            headers["content-type"] = self.media_type
        if token:
            headers["authorization"] = f"Bearer {token}"
        return headers

    def settle(self, outcome: Outcome) -> T:
        """The parsed answer, or the error it carries."""
        if isinstance(outcome, httpx.TransportError):
            raise GradualConnectionError(
                f"{self.method} {self.path}: {type(outcome).__name__}: {outcome}"
            ) from outcome
        if outcome.is_error:
            raise GradualClientError.from_response(outcome)
        return self.read(outcome)


def _path(name: str, *rest: str) -> str:
    return "/".join([MODELS, quote(name, safe=""), *rest])


def _json(payload: dict[str, Any]) -> dict[str, Any]:
    return {"content": json_body(payload), "media_type": JSON}


def _reader(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(cls, response.json())


def _list_reader(cls: type[T], key: str) -> Callable[[httpx.Response], list[T]]:
    return lambda response: parse_list(cls, response.json(), key)


def create(
    name: str, spec: Mapping[str, Any], optimizer: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None, seed: int,
) -> Call[Model]:  # fmt: skip
    payload: dict[str, Any] = {"name": name, "spec": dict(spec), "seed": seed}
    if optimizer is not None:
        payload["optimizer"] = dict(optimizer)
    if training is not None:
        payload["training"] = dict(training)
    return Call("POST", MODELS, _reader(Model), **_json(payload))


def get(name: str) -> Call[Model]:
    return Call("GET", _path(name), _reader(Model), idempotent=True)


def list_models() -> Call[list[Model]]:
    return Call("GET", MODELS, _list_reader(Model, "models"), idempotent=True)


def delete(name: str) -> Call[None]:
    return Call("DELETE", _path(name), lambda _response: None)


def partial_fit(
    name: str, inputs: Any, targets: Any, *, batch_id: str | None, wait: bool
) -> Call[FitResult | Queued]:
    params = {} if wait else {"wait": "false"}
    if is_array_data(inputs, targets):
        body = tensors_body(inputs=inputs_array(inputs), targets=targets_array(targets))
        if batch_id is not None:
            params["batch_id"] = batch_id
        encoded: dict[str, Any] = {"content": body, "media_type": SAFETENSORS}
    else:
        payload = {"inputs": inputs, "targets": targets}
        encoded = _json(payload if batch_id is None else payload | {"batch_id": batch_id})
    return Call(
        "POST", _path(name, "partial-fit"), _fit_answer, params=params,
        idempotent=batch_id is not None, **encoded,
    )  # fmt: skip


def _fit_answer(response: httpx.Response) -> FitResult | Queued:
    if response.status_code == httpx.codes.ACCEPTED:
        return parse(Queued, response.json())
    return parse(FitResult, response.json())


def predict(name: str, inputs: Any, *, version: int | None) -> Call[Prediction]:
    path = _path(name, "predict")
    reader = _reader(Prediction)
    if is_array_data(inputs):
        params = {} if version is None else {"version": str(version)}
        body = tensors_body(inputs=inputs_array(inputs))
        return Call("POST", path, reader, body, SAFETENSORS, params, idempotent=True)
    payload: dict[str, Any] = {"inputs": inputs}
    if version is not None:
        payload["version"] = version
    return Call("POST", path, reader, idempotent=True, **_json(payload))


def versions(name: str) -> Call[list[Version]]:
    return Call("GET", _path(name, "versions"), _list_reader(Version, "versions"), idempotent=True)


def version(name: str, number: int) -> Call[Version]:
    return Call("GET", _path(name, "versions", str(number)), _reader(Version), idempotent=True)


def checkpoint(name: str) -> Call[Version]:
    return Call("POST", _path(name, "versions"), _reader(Version))


def rollback(name: str, number: int) -> Call[Version]:
    return Call("POST", _path(name, "rollback"), _reader(Version), **_json({"version": number}))


def promote(name: str, number: int) -> Call[Version]:
    return Call("POST", _path(name, "promote"), _reader(Version), **_json({"version": number}))


def events(name: str, since: int) -> Call[list[Event]]:
    return Call(
        "GET", _path(name, "events"), _list_reader(Event, "events"),
        params={"since": str(since)}, idempotent=True,
    )  # fmt: skip
