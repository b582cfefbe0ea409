"""gRPC messages ↔ the protocol's values in `service.oip.schemas`.

An input's data comes either in `raw_input_contents` (one entry per input, raw little-endian
bytes) or in its `contents`, in the field of its datatype (FP32 in `fp32_contents`, INT32 in
`int_contents`, ...). Outputs always go back as `raw_output_contents`, as Triton sends them.
"""

from __future__ import annotations

import numpy as np

from service.api.schemas import MAX_VERSION
from service.errors import InvalidInput
from service.oip import binary_tensors
from service.oip.grpc.generated import grpc_predict_v2_pb2 as pb
from service.oip.schemas import InputTensor, ModelMetadata, ResponseOutput

# The `contents` field that carries each datatype (FP16 has none: raw contents only).
CONTENTS = {
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}  # fmt: skip
FIELDS = (
    "bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
    "fp32_contents", "fp64_contents", "bytes_contents",
)  # fmt: skip


def version_number(text: str) -> int | None:
    """A request's `version`: empty for the served one, else a number."""
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidInput(f"version must be a number in 1..{MAX_VERSION}", field="version")
    return int(text)


def input_tensors(request: pb.ModelInferRequest) -> list[InputTensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        message = f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        raise InvalidInput(message, field="raw_input_contents")
    return [
        _input(index, tensor, raw[index] if raw else None)
        for index, tensor in enumerate(request.inputs)
    ]


def _input(
    index: int, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> InputTensor:
    shape, datatype = list(tensor.shape), tensor.datatype
    if raw is not None:
        if tensor.HasField("contents"):
            message = f"inputs[{index}] has contents and raw_input_contents; send one"
            raise InvalidInput(message, field=f"inputs[{index}].contents")
        return InputTensor(tensor.name, datatype, shape, raw, f"raw_input_contents[{index}]")
    return InputTensor(tensor.name, datatype, shape, _contents(index, tensor))


def _contents(index: int, tensor: pb.ModelInferRequest.InferInputTensor) -> np.ndarray:
    """The elements from the contents field of the tensor's datatype, refusing any other."""
    if tensor.datatype not in binary_tensors.DTYPES:
        return np.empty(0)  # `inference.input_matrix` refuses the datatype, naming it
    field = CONTENTS.get(tensor.datatype)
    filled = [name for name in FIELDS if len(getattr(tensor.contents, name))]
    if field is None or any(name != field for name in filled):
        where = f"contents.{field}" if field else "raw_input_contents"
        got = f"; got {', '.join(filled)}" if filled else ""
        message = f"inputs[{index}]: {tensor.datatype} data goes in {where}{got}"
        raise InvalidInput(message, field=f"inputs[{index}].contents")
    dtype = binary_tensors.DTYPES[tensor.datatype]
    try:
        return np.asarray(getattr(tensor.contents, field), dtype=dtype)
    except OverflowError:
        message = f"inputs[{index}]: a value does not fit {tensor.datatype}"
        raise InvalidInput(message, field=f"inputs[{index}].contents") from None


def requested_outputs(request: pb.ModelInferRequest) -> list[str] | None:
    return [output.name for output in request.outputs] or None


def infer_response(
    request: pb.ModelInferRequest, version: int, outputs: list[ResponseOutput]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=str(version), id=request.id
    )
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(
            binary_tensors.to_raw(output.data or [], output.datatype)
        )
    return response


def model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
    )
