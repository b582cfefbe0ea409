"""The Open Inference Protocol's tensors (KServe / Triton v2): what a model declares, what a
request carries, what a response returns.

A model has one input, `inputs` of shape [-1, features], and its task's outputs:
`predictions` (INT64 labels, or FP32 values for regression) and, for classifiers,
`probabilities` (FP32, one column per class). Tensor data is row-major: a request may send it
flat or nested, a response always sends it flat. Pure functions over pydantic models, so
`service.api.oip` only routes.
"""

from __future__ import annotations

from itertools import chain
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from models.spec import NetworkSpec
from service.errors import InvalidInput
from service.learning.served import Predictions
from service.runtime.batches import matrix_from

INPUT = "inputs"
FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
DATATYPES = FLOATS | INTEGERS

Parameters = dict[str, Any]


class Open(BaseModel):
    """The protocol's objects refuse keys it does not define."""

    model_config = ConfigDict(extra="forbid")


class ProtocolError(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The versions an infer request may name.")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(Open):
    name: str
    shape: list[Annotated[StrictInt, Field(ge=0)]]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] = Field(description="Row-major elements, flat or nested.")


class RequestOutput(Open):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(Open):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(default=None, description="Default: all.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] = Field(description="Row-major elements, flat.")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


def model_metadata(name: str, spec: NetworkSpec, versions: list[int]) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        versions=[str(number) for number in versions],
        platform="pytorch",
        inputs=[TensorMetadata(name=INPUT, datatype="FP32", shape=[-1, spec.inputs])],
        outputs=output_metadata(spec),
    )


def output_metadata(spec: NetworkSpec) -> list[TensorMetadata]:
    if spec.task == "regression":
        shape = [-1] if spec.outputs == 1 else [-1, spec.outputs]
        return [TensorMetadata(name="predictions", datatype="FP32", shape=shape)]
    classes = 2 if spec.task == "binary" else spec.outputs
    return [
        TensorMetadata(name="predictions", datatype="INT64", shape=[-1]),
        TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, classes]),
    ]


def input_matrix(
    request: InferenceRequest, spec: NetworkSpec, *, max_rows: int, max_abs: float
) -> np.ndarray:
    """The request's one input tensor → float32 rows (N, features), checked like native
    predict's `inputs`: finite, bounded, at most `max_rows`."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidInput(f"the model has one input tensor, {INPUT!r}; got {names}", field=INPUT)
    tensor = request.inputs[0]
    if tensor.datatype not in DATATYPES:
        accepted = ", ".join(sorted(DATATYPES))
        raise InvalidInput(f"datatype {tensor.datatype!r} is not one of {accepted}", field=INPUT)
    if len(tensor.shape) != 2 or tensor.shape[1] != spec.inputs:
        message = f"inputs shape must be [N, {spec.inputs}]; got {tensor.shape}"
        raise InvalidInput(message, field=INPUT)
    rows = _elements(tensor).reshape(tensor.shape)
    return matrix_from(rows, field=INPUT, features=spec.inputs, max_rows=max_rows, max_abs=max_abs)


def _elements(tensor: RequestInput) -> np.ndarray:
    """The data as one flat numeric array, as many elements as the shape says."""
    try:
        array = np.asarray(tensor.data).reshape(-1)
    except (ValueError, OverflowError):
        raise InvalidInput("inputs data must be numbers, nested evenly", field=INPUT) from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput("inputs data must contain only numbers", field=INPUT)
    if tensor.datatype in INTEGERS and array.dtype.kind == "f":
        raise InvalidInput(f"{tensor.datatype} data must be whole numbers", field=INPUT)
    expected = tensor.shape[0] * tensor.shape[1]
    if array.size != expected:
        message = f"inputs data has {array.size} elements; shape {tensor.shape} needs {expected}"
        raise InvalidInput(message, field=INPUT)
    return array


def output_names(spec: NetworkSpec, requested: list[RequestOutput] | None) -> list[str]:
    """The outputs to return, in the order named; all of them when none are."""
    declared = [tensor.name for tensor in output_metadata(spec)]
    names = [output.name for output in requested] if requested else declared
    unknown = [name for name in names if name not in declared]
    if unknown:
        message = f"the model has no output {unknown[0]!r}; it has {declared}"
        raise InvalidInput(message, field="outputs")
    return names


def output_tensors(
    spec: NetworkSpec, result: Predictions, names: list[str]
) -> list[ResponseOutput]:
    declared = {tensor.name: tensor for tensor in output_metadata(spec)}
    values = {"predictions": result.predictions, "probabilities": result.probabilities or []}
    rows = len(result.predictions)
    return [
        ResponseOutput(
            name=name,
            shape=[rows, *declared[name].shape[1:]],
            datatype=declared[name].datatype,
            data=_flat(values[name]),
        )
        for name in names
    ]


def _flat(values: list[Any]) -> list[Any]:
    if values and isinstance(values[0], list):
        return list(chain.from_iterable(values))
    return values
