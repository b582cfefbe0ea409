"""`inference.GRPCInferenceService`: each RPC checks its token, calls `service.oip.protocol` as the
/v2 route of the same name does, and answers; a refusal becomes a gRPC status.

Access is the HTTP routes': ServerLive and ServerReady are open (probes), every other RPC
needs a read token once tokens are configured, sent as metadata `authorization: Bearer <token>`.
Errors map through the one HTTP table (`service.api.errors`) to the gRPC code of that status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from service.api.access import authorize
from service.api.errors import status_for
from service.config import Settings
from service.errors import GradualError
from service.oip import binary_tensors, protocol
from service.oip.grpc import tensors
from service.oip.grpc.generated import grpc_predict_v2_pb2 as pb
from service.runtime.hub import ModelHub
from service.tokens import Scope

log = logging.getLogger("gradual.grpc")

NAME = "inference.GRPCInferenceService"
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.FAILED_PRECONDITION,  # the version exists; its weights were archived
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

Request = TypeVar("Request")
Response = TypeVar("Response")
Context = aio.ServicerContext[Any, Any]


class InferenceService:
    """The RPCs, over the app's hub and settings; `loaded` tells whether the start finished,
    `version` is the server's (the app's)."""

    def __init__(
        self, hub: ModelHub, settings: Settings, *, loaded: Callable[[], bool], version: str
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.loaded = loaded
        self.version = version

    async def server_live(self, _request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, _request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        ready = await protocol.server_ready(self.hub, loaded=self.loaded())
        return pb.ServerReadyResponse(ready=ready)

    async def server_metadata(
        self, _request: pb.ServerMetadataRequest
    ) -> pb.ServerMetadataResponse:
        # The server's extensions, as GET /v2 lists them (Triton lists them alike on both).
        return pb.ServerMetadataResponse(
            name="gradual", version=self.version, extensions=[binary_tensors.EXTENSION]
        )

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        await self._discover(request.name)
        version = tensors.version_number(request.version)
        return pb.ModelReadyResponse(
            ready=await protocol.model_ready(self.hub, request.name, version)
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        await self._discover(request.name)
        version = tensors.version_number(request.version)
        metadata = await protocol.metadata(self.hub, request.name, version)
        return tensors.model_metadata(metadata)

    async def model_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        await self._discover(request.model_name)
        version = tensors.version_number(request.model_version)
        self.hub.live(request.model_name)  # an unknown model is NOT_FOUND whatever the tensors
        served, outputs = await protocol.infer(
            self.hub, self.settings, request.model_name, tensors.input_tensors(request),
            outputs=tensors.requested_outputs(request), version=version,
        )  # fmt: skip
        return tensors.infer_response(request, served, outputs)

    async def _discover(self, name: str) -> None:
        """With several replicas, a model created on another one may not be here yet."""
        if self.hub.cluster is not None and not self.hub.has(name):
            await self.hub.models.discover(name)


def handler(service: InferenceService, settings: Settings) -> grpc.GenericRpcHandler:
    """The service's methods by RPC name, each behind its access check and error mapping."""
    methods: dict[str, tuple[Any, Any, Any, Scope | None]] = {
        "ServerLive": (service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, None),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, None),
        "ModelReady": (
            service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, Scope.READ
        ),
        "ServerMetadata": (
            service.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse,
            Scope.READ,
        ),
        "ModelMetadata": (
            service.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse,
            Scope.READ,
        ),
        "ModelInfer": (
            service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse, Scope.READ
        ),
    }  # fmt: skip
    return grpc.method_handlers_generic_handler(
        NAME,
        {
            name: grpc.unary_unary_rpc_method_handler(
                guarded(method, settings, scope),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response, scope) in methods.items()
        },
    )


def guarded(
    method: Callable[[Request], Awaitable[Response]], settings: Settings, scope: Scope | None
) -> Callable[[Request, Context], Awaitable[Response]]:
    """`method` behind the token check, with every refusal turned into a gRPC status."""

    async def call(request: Request, context: Context) -> Response:
        try:
            authorize(_authorization(context), settings, scope)
            return await method(request)
        except GradualError as exc:
            await context.abort(CODES.get(status_for(exc), grpc.StatusCode.INTERNAL), exc.message)
        except Exception as exc:
            log.exception("unhandled error", exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
        raise AssertionError("abort raises")  # pragma: no cover

    return call


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None
