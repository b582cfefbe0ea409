"""Turns decoded JSON values into validated arrays, refusing anything a step should not see.

Each refusal names its field, so a client can tell `inputs` from `targets` from `version`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from models.spec import NetworkSpec
from service.errors import InvalidInput, MalformedBody


def matrix_from(
    value: Any, *, field: str, features: int, max_rows: int, max_abs: float
) -> np.ndarray:
    """Rows (a list, or an array from a binary body) → float32 (N, features): finite, bounded,
    rectangular, non-empty."""
    if not isinstance(value, list | np.ndarray):
        raise InvalidInput(f"{field} must be a list of rows", field=field)
    if len(value) == 0:
        raise InvalidInput(f"{field} is empty", field=field)
    if len(value) > max_rows:
        raise InvalidInput(f"{field} has {len(value)} rows; the limit is {max_rows}", field=field)
    array = _numeric_array(value, field)
    if array.ndim != 2:
        raise InvalidInput(f"{field} must be a list of rows of numbers", field=field)
    if array.shape[1] != features:
        raise InvalidInput(
            f"{field} rows have {array.shape[1]} features; the model expects {features}",
            field=field,
        )
    return _finite_float32(array, field, max_abs)


def targets_from(value: Any, *, spec: NetworkSpec, rows: int, max_abs: float) -> np.ndarray:
    """Targets per task: class ids, 0/1 labels, or numbers (one per output)."""
    field = "targets"
    if not isinstance(value, list) and not (isinstance(value, np.ndarray) and value.ndim > 0):
        raise InvalidInput("targets must be a list", field=field)
    if len(value) != rows:
        raise InvalidInput(f"targets has {len(value)} entries for {rows} input rows", field=field)
    array = _numeric_array(value, field)
    if spec.task == "regression":
        return _regression_targets(array, spec, max_abs)
    if array.ndim != 1 or (array.dtype.kind not in "iu" and not _whole(array)):
        raise InvalidInput("targets must be whole-number labels, one per row", field=field)
    top = 1 if spec.task == "binary" else spec.outputs - 1
    if array.min() < 0 or array.max() > top:  # before the cast: 1e19 does not fit an int64
        raise InvalidInput(f"targets must be labels in 0..{top}", field=field)
    labels = array.astype(np.int64)
    return labels if spec.task == "classification" else labels.astype(np.float32)


def _regression_targets(array: np.ndarray, spec: NetworkSpec, max_abs: float) -> np.ndarray:
    rows = array.shape[0]
    shapes = {(rows,), (rows, 1)} if spec.outputs == 1 else {(rows, spec.outputs)}
    if array.shape not in shapes:
        raise InvalidInput(f"targets must be {spec.outputs} number(s) per row", field="targets")
    return _finite_float32(array, "targets", max_abs)


def _numeric_array(value: list[Any] | np.ndarray, field: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{field} must be rectangular and numeric", field=field) from exc
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{field} must contain only numbers", field=field)
    return array


def _finite_float32(array: np.ndarray, field: str, max_abs: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf: refused next
        as_float = np.ascontiguousarray(array, dtype=np.float32)  # no copy when it already is
    # One pass for the usual case: the largest |value| is NaN if any is, and NaN ≤ x is false.
    if not as_float.size or float(np.abs(as_float).max()) <= max_abs:
        return as_float
    if not np.isfinite(as_float).all():
        raise InvalidInput(f"{field} contains non-finite numbers", field=field)
    raise InvalidInput(f"{field} contains a number beyond ±{max_abs:g}", field=field)


def _whole(array: np.ndarray) -> bool:
    finite = np.isfinite(array).all()
    return bool(array.dtype.kind == "f" and finite and (array == np.round(array)).all())


def decode_json(body: bytes) -> Any:
    """Strict JSON; but a body that is JSON save for NaN, Infinity or an overflowing number is
    decoded anyway, so that validation refuses the non-finite value naming its field (422)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)  # the error path only: accepts NaN, ±Infinity, 1e400 → inf
        except (ValueError, RecursionError):
            raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
