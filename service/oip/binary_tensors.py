"""The Open Inference Protocol's binary tensor data extension (Triton's `binary_tensor_data`,
which KServe and MLServer clients speak too): a JSON header, then the tensors' raw bytes.

A request's `Inference-Header-Content-Length` says how many bytes of the body are the JSON
header; the rest is the data of the inputs whose `parameters.binary_data_size` is set, one after
another in the order of the inputs. A response frames binary outputs the same way. Raw data is
row-major and little-endian, as gRPC's `raw_input_contents` / `raw_output_contents` are.
Pure functions over bytes and arrays: nothing of HTTP here.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, MalformedBody

EXTENSION = "binary_tensor_data"
HEADER = "Inference-Header-Content-Length"
SIZE = "binary_data_size"

# Little-endian element types of the protocol's numeric datatypes.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
        "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
        "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    }.items()
}  # fmt: skip


def split(body: bytes, header_length: int | None) -> tuple[bytes, bytes]:
    """The body → (JSON header, binary tail); all of it is JSON without the header."""
    if header_length is None:
        return body, b""
    if header_length > len(body):
        message = f"{HEADER} is {header_length}, beyond the body's {len(body)} bytes"
        raise MalformedBody(message, field=HEADER)
    return body[:header_length], body[header_length:]


def binary_size(parameters: dict[str, Any] | None, *, field: str) -> int | None:
    """A tensor's `parameters.binary_data_size`, checked; None when it has none."""
    size = (parameters or {}).get(SIZE)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        message = f"{field}.parameters.{SIZE} must be a whole number of bytes"
        raise InvalidInput(message, field=field)
    return size


def chunks(sizes: list[int | None], tail: bytes, *, binary: bool) -> list[bytes | None]:
    """The tail cut into each binary input's bytes (None for inputs sent as JSON data)."""
    declared = sum(size for size in sizes if size is not None)
    if not binary and any(size is not None for size in sizes):
        message = f"inputs declare parameters.{SIZE}, but the request has no {HEADER} header"
        raise InvalidInput(message, field=HEADER)
    if declared != len(tail):
        message = (
            f"the binary data after the JSON header is {len(tail)} bytes; the inputs' "
            f"parameters.{SIZE} add up to {declared} ({HEADER} may be wrong)"
        )
        raise InvalidInput(message, field=HEADER)
    cuts: list[bytes | None] = []
    start = 0
    for size in sizes:
        cuts.append(None if size is None else tail[start : start + size])
        start += size or 0
    return cuts


def from_raw(datatype: str, shape: list[int], raw: bytes, *, field: str) -> np.ndarray:
    """Raw little-endian bytes → a flat array of `datatype`, exactly as many as `shape` says."""
    dtype = DTYPES[datatype]
    needed = prod(shape) * dtype.itemsize
    if len(raw) != needed:
        message = (
            f"{field} is {len(raw)} bytes, but shape {shape} of {datatype} needs {needed} "
            f"({dtype.itemsize} bytes an element)"
        )
        raise InvalidInput(message, field=field)
    return np.frombuffer(raw, dtype=dtype).copy()  # writable: torch shares an array's memory


def to_raw(values: list[Any], datatype: str) -> bytes:
    """Row-major values (nested or flat) → raw little-endian bytes of `datatype`."""
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()


def frame(header: dict[str, Any], tail: list[bytes]) -> tuple[bytes, int]:
    """A response body: the JSON header, then the binary outputs; and the header's length."""
    head = orjson.dumps(header)
    return head + b"".join(tail), len(head)
