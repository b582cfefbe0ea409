"""Request bodies from a caller's data: plain lists go as JSON, array data (NumPy, pandas,
anything with `__array__`) as a safetensors body, which the service reads without parsing text.

pandas is never imported here: a DataFrame or Series converts through NumPy's array protocol,
so the client works, and stays light, where pandas is not installed. NumPy itself is imported
by the first call that sends data, so that the command line's other commands start faster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import numpy as np

JSON = "application/json"
SAFETENSORS = "application/x-safetensors"


def as_array(value: Any) -> np.ndarray | None:
    """A NumPy view of array data; None for a plain list or tuple (sent as JSON)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list | tuple):
        return None
    if hasattr(value, "__array__"):  # pandas DataFrame/Series, polars, xarray, CPU tensors
        return np.asarray(value)
    raise TypeError(
        f"expected a list of rows, a NumPy array or a DataFrame, got {type(value).__name__}"
    )


def inputs_array(value: Any) -> np.ndarray:
    """Rows as a C-contiguous float32 matrix: what the service computes in anyway, at half
    the bytes of float64."""
    import numpy as np

    array = as_array(value)
    array = np.asarray(value) if array is None else array
    if array.dtype.kind not in "biuf":
        raise TypeError(f"inputs must be numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def targets_array(value: Any) -> np.ndarray:
    """Labels stay whole numbers (int64); regression targets go as float32."""
    import numpy as np

    array = as_array(value)
    array = np.asarray(value) if array is None else array
    if array.dtype.kind in "biu":
        return np.ascontiguousarray(array, dtype=np.int64)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=np.float32)
    raise TypeError(f"targets must be numbers (class ids or values), got dtype {array.dtype}")


def is_array_data(*values: Any) -> bool:
    return any(as_array(value) is not None for value in values)


def json_body(payload: dict[str, Any]) -> bytes:
    """orjson, so NumPy scalars inside lists serialize too."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def tensors_body(**arrays: np.ndarray) -> bytes:
    from safetensors.numpy import save as save_arrays

    return bytes(save_arrays(arrays))
