"""Body decoding: bounded reads, strict JSON (orjson refuses NaN, Infinity and 1e400)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import Request
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays

from service.api.schemas import MAX_VERSION
from service.errors import InvalidInput, MalformedBody, UnsupportedMediaType
from service.runtime.batches import decode_json

JSON_TYPES = {"application/json", ""}
NDJSON = "application/x-ndjson"
NPY = "application/x-npy"
SAFETENSORS = "application/x-safetensors"
BINARY_TYPES = {NPY, SAFETENSORS}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def payload(request: Request, *, allowed: set[str]) -> dict[str, Any]:
    """The body as fields: a JSON object, or arrays from a binary tensor body."""
    kind = media_type(request)
    if kind in BINARY_TYPES:
        return binary_arrays(kind, await request.body(), allowed=allowed)
    return await json_object(request, allowed=allowed)


def binary_arrays(kind: str, body: bytes, *, allowed: set[str]) -> dict[str, Any]:
    """NumPy `.npy` (one inputs array, or a structured array with `inputs` and `targets`
    fields) or safetensors (tensors named `inputs` and `targets`). Never unpickled."""
    try:
        if kind == NPY:
            array = np.load(io.BytesIO(body), allow_pickle=False)
            fields = array.dtype.names
            arrays = {name: array[name] for name in fields} if fields else {"inputs": array}
        else:
            arrays = dict(load_arrays(body))
    except (ValueError, OSError, EOFError, SafetensorError) as exc:
        raise MalformedBody(f"the body is not a readable {kind} array: {exc}") from exc
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        raise InvalidInput(f"unknown array {unknown[0]!r}", field=unknown[0])
    return arrays


async def json_object(request: Request, *, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys."""
    kind = media_type(request)
    if kind not in JSON_TYPES:
        raise UnsupportedMediaType(f"expected application/json, got {kind}")
    payload = decode_json(await request.body())
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    return payload


def optional_version(payload: dict[str, Any]) -> int | None:
    version = payload.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidInput(f"version must be an integer in 1..{MAX_VERSION}", field="version")
    return version
