"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`) on
GRADUAL_GRPC_PORT: Triton's gRPC client against a real server, the typed `contents` and raw
contents, unknown models, access tokens as metadata, and the generated code kept current.

Every answer is compared bit for bit with native predict's for the same rows.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from fastapi.testclient import TestClient
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.utils import InferenceServerException

from service.config import Settings
from service.oip.grpc.generated import grpc_predict_v2_pb2 as pb
from tests.factories import model_body, rows
from tests.live_server import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"authorization": "Bearer admin-token"}


def rows32(n: int, *, seed: int = 0) -> np.ndarray:
    return np.asarray(rows(n, seed=seed), dtype=np.float32)


def expected_bits(answer: Any) -> tuple[np.ndarray, bytes]:
    """Native predict's labels, and its probabilities as float32 bytes."""
    labels = np.asarray(answer["predictions"], dtype=np.int64)
    return labels, np.asarray(answer["probabilities"], dtype=np.float32).tobytes()


# -- Triton's client, against a real server ---------------------------------------------------


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[tuple[str, int]]:
    """A live server with a 3-class model `m`, its gRPC port open; yields (HTTP url, gRPC port)."""
    port = free_port()
    with serving(make_settings(grpc_port=port, torch_threads=1)) as url:
        created = httpx.post(f"{url}/v1/models", json=model_body("m"), timeout=30)
        assert created.status_code == 201, created.text
        yield url, port


def test_tritonclient_grpc_answers_native_predict_bit_for_bit(server: tuple[str, int]) -> None:
    url, port = server
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("m")
    assert client.is_model_ready("m", "1")
    metadata = client.get_model_metadata("m", as_json=True)
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == ("m", ["1"], "pytorch")
    x = rows32(9, seed=2)
    tensor = triton_grpc.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("m", [tensor], request_id="9")
    assert (result.get_response().id, result.get_response().model_version) == ("9", "1")
    native = httpx.post(f"{url}/v1/models/m/predict", json={"inputs": x.tolist()}, timeout=30)
    labels, probabilities = expected_bits(native.json())
    assert result.as_numpy("predictions").dtype == np.int64
    assert np.array_equal(result.as_numpy("predictions"), labels)
    assert result.as_numpy("probabilities").tobytes() == probabilities
    client.close()


def test_tritonclient_grpc_unknown_model_is_not_found(server: tuple[str, int]) -> None:
    _, port = server
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert "no model named 'nope'" in raised.value.message()
    client.close()


# -- the service's own messages, in process ---------------------------------------------------


class Rpc:
    """Calls the service with the generated messages, as any gRPC client of the proto would."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = [("authorization", f"Bearer {token}")] if token else None

    def __call__(self, method: str, request: Any, answer: type[Any]) -> Any:
        call = self.channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        return call(request, metadata=self.metadata, timeout=30)

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        return self("ModelInfer", request, pb.ModelInferResponse)


@pytest.fixture
def app(start: Callable[..., TestClient], make_settings: Callable[..., Settings]) -> TestClient:
    """The app with `m` (3 classes, 4 features), its gRPC service on a free port."""
    client = start(make_settings(grpc_port=0))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


@pytest.fixture
def rpc(app: TestClient) -> Iterator[Rpc]:
    caller = Rpc(app.app.state.grpc_port)  # type: ignore[attr-defined]
    yield caller
    caller.channel.close()


def infer_request(x: np.ndarray, datatype: str = "FP32", **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", **fields)
    request.inputs.add(name="inputs", datatype=datatype, shape=list(x.shape))
    return request


def assert_native(app: TestClient, x: np.ndarray, response: pb.ModelInferResponse) -> None:
    """The raw outputs are bit for bit native predict's answer for `x`."""
    answer = app.post("/v1/models/m/predict", json={"inputs": x.astype(np.float64).tolist()})
    labels, probabilities = expected_bits(answer.json())
    names = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
    assert names == [("predictions", "INT64", [len(x)]), ("probabilities", "FP32", [len(x), 3])]
    assert response.raw_output_contents[0] == labels.tobytes()
    assert response.raw_output_contents[1] == probabilities


def status_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    return error.code(), error.details()


def test_raw_input_contents_answer_native_predict(app: TestClient, rpc: Rpc) -> None:
    x = rows32(6)
    response = rpc.infer(infer_request(x, raw_input_contents=[x.tobytes()], id="6"))
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "6")
    assert_native(app, x, response)


@pytest.mark.parametrize(
    ("datatype", "field", "dtype"),
    [
        ("FP32", "fp32_contents", np.float32),
        ("FP64", "fp64_contents", np.float64),
        ("INT64", "int64_contents", np.int64),
        ("INT32", "int_contents", np.int32),
        ("UINT8", "uint_contents", np.uint8),
    ],
)
def test_typed_contents_answer_native_predict(
    app: TestClient, rpc: Rpc, datatype: str, field: str, dtype: Any
) -> None:
    x = (rows32(5) * 3).round().astype(dtype) if dtype != np.float32 else rows32(5)
    x = np.abs(x) if datatype.startswith("U") else x
    request = infer_request(x, datatype)
    getattr(request.inputs[0].contents, field).extend(x.reshape(-1).tolist())
    assert_native(app, x.astype(np.float32), rpc.infer(request))


def test_requested_outputs_come_back_in_the_order_named(rpc: Rpc) -> None:
    x = rows32(2)
    request = infer_request(x, raw_input_contents=[x.tobytes()])
    request.outputs.add(name="probabilities")
    response = rpc.infer(request)
    assert [output.name for output in response.outputs] == ["probabilities"]
    assert len(response.raw_output_contents) == 1


@pytest.mark.parametrize(
    ("build", "mentions"),
    [
        (lambda x: infer_request(x, raw_input_contents=[x.astype(np.float64).tobytes()]),
         "raw_input_contents[0] is 64 bytes, but shape [2, 4] of FP32 needs 32"),
        (lambda x: infer_request(x, raw_input_contents=[x.tobytes()] * 2),
         "raw_input_contents has 2 entries for 1 inputs"),
        (lambda x: infer_request(x, "BYTES", raw_input_contents=[x.tobytes()]),
         "datatype 'BYTES'"),
        (lambda x: infer_request(x.reshape(4, 2), raw_input_contents=[x.tobytes()]),
         "shape must be [N, 4]"),
        (lambda x: infer_request(x), "inputs data has 0 elements; shape [2, 4] needs 8"),
        (lambda x: infer_request(x, model_version="v1", raw_input_contents=[x.tobytes()]),
         "version must be a number"),
    ],
)  # fmt: skip
def test_malformed_infer_is_invalid_argument(
    rpc: Rpc, build: Callable[[np.ndarray], pb.ModelInferRequest], mentions: str
) -> None:
    code, details = status_of(lambda: rpc.infer(build(rows32(2))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert mentions in details


def test_contents_in_the_field_of_another_datatype_are_invalid(rpc: Rpc) -> None:
    request = infer_request(rows32(1))
    request.inputs[0].contents.int64_contents.extend([1, 2, 3, 4])
    code, details = status_of(lambda: rpc.infer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP32 data goes in contents.fp32_contents; got int64_contents" in details


@pytest.mark.parametrize(
    ("method", "message", "answer"),
    [
        ("ModelReady", pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse),
        ("ModelReady", pb.ModelReadyRequest(name="nope", version="1"), pb.ModelReadyResponse),
        ("ModelReady", pb.ModelReadyRequest(name="m", version="9"), pb.ModelReadyResponse),
        ("ModelMetadata", pb.ModelMetadataRequest(name="nope"), pb.ModelMetadataResponse),
        ("ModelMetadata", pb.ModelMetadataRequest(name="m", version="9"), pb.ModelMetadataResponse),
        ("ModelInfer", pb.ModelInferRequest(model_name="nope"), pb.ModelInferResponse),
        ("ModelInfer", pb.ModelInferRequest(model_name="nope", model_version="2"),
         pb.ModelInferResponse),
    ],
)  # fmt: skip
def test_unknown_model_or_version_is_not_found(
    rpc: Rpc, method: str, message: Any, answer: type[Any]
) -> None:
    code, details = status_of(lambda: rpc(method, message, answer))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in details or "version 9" in details


def test_request_over_the_body_limit_is_refused(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start(make_settings(grpc_port=0, max_body_bytes=4096))
    client.post("/v1/models", json=model_body("m"))
    x = np.zeros((300, 4), dtype=np.float32)
    caller = Rpc(client.app.state.grpc_port)  # type: ignore[attr-defined]
    code, _ = status_of(lambda: caller.infer(infer_request(x, raw_input_contents=[x.tobytes()])))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    caller.channel.close()


def test_no_grpc_port_means_no_grpc_service(client: TestClient) -> None:
    assert client.app.state.grpc_port is None  # type: ignore[attr-defined]


# -- access -----------------------------------------------------------------------------------


@pytest.fixture
def guarded(start: Callable[..., TestClient], make_settings: Callable[..., Settings]) -> int:
    """An app with tokens configured and model `m`; its gRPC port."""
    settings = make_settings(grpc_port=0, api_tokens="read=reader-token,admin=admin-token")
    client = start(settings)
    assert client.post("/v1/models", json=model_body("m"), headers=ADMIN).status_code == 201
    port: int = client.app.state.grpc_port  # type: ignore[attr-defined]
    return port


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("wrong-token", grpc.StatusCode.UNAUTHENTICATED),
        ("reader-token", grpc.StatusCode.OK),
        ("admin-token", grpc.StatusCode.OK),
    ],
)
def test_infer_needs_a_read_token_in_the_metadata(
    guarded: int, token: str | None, code: grpc.StatusCode
) -> None:
    caller = Rpc(guarded, token)
    x = rows32(1)
    request = infer_request(x, raw_input_contents=[x.tobytes()])
    for method, message, answer in [
        ("ModelInfer", request, pb.ModelInferResponse),
        ("ModelMetadata", pb.ModelMetadataRequest(name="m"), pb.ModelMetadataResponse),
        ("ModelReady", pb.ModelReadyRequest(name="m"), pb.ModelReadyResponse),
        ("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse),
    ]:
        if code == grpc.StatusCode.OK:
            assert caller(method, message, answer) is not None
        else:
            assert status_of(lambda m=method, r=message, a=answer: caller(m, r, a))[0] == code
    caller.channel.close()


def test_probes_need_no_token(guarded: int) -> None:
    caller = Rpc(guarded)
    assert caller("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert caller("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    caller.channel.close()


def test_tritonclient_sends_its_token_as_metadata(guarded: int) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{guarded}")
    assert client.is_model_ready("m", headers={"authorization": "Bearer reader-token"})
    with pytest.raises(InferenceServerException) as raised:
        client.is_model_ready("m")
    assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
    client.close()


# -- the generated code -----------------------------------------------------------------------


def test_generated_messages_are_current(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "generate-grpc"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=60)
    committed = ROOT / "service" / "oip" / "grpc" / "generated"
    for made in sorted(tmp_path.iterdir()):
        assert made.read_text() == (committed / made.name).read_text(), f"{made.name} is stale"


def fields_of(message: Descriptor) -> dict[str, tuple[int, int, int]]:
    return {f.name: (f.number, f.type, f.label) for f in message.fields}


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_messages_match_tritons_on_the_wire(message: str) -> None:
    """Every field has the number and type of Triton's copy of the protocol (a superset)."""
    ours, theirs = pb.DESCRIPTOR.message_types_by_name[message], triton_pb.DESCRIPTOR
    reference = theirs.message_types_by_name[message]
    for nested in [ours, *ours.nested_types]:
        expected = reference if nested is ours else reference.nested_types_by_name[nested.name]
        assert fields_of(nested).items() <= fields_of(expected).items(), nested.full_name
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} <= {
        m.name for m in theirs.services_by_name["GRPCInferenceService"].methods
    }
