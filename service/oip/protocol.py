"""The Open Inference Protocol's operations on the hub, shared by its two transports: the /v2
HTTP routes (`service.api.oip`) and the gRPC service (`service.oip.grpc`).

Each transport decodes its request into `inference` values, calls one function here, and
encodes the answer; so both answer alike, and alike to native predict.
"""

from __future__ import annotations

from anyio import to_thread

from service.config import Settings
from service.oip import schemas as inference
from service.oip.schemas import InputTensor, ModelMetadata, ResponseOutput
from service.runtime.hub import ModelHub


async def server_ready(hub: ModelHub, *, loaded: bool) -> bool:
    """Ready once every model is loaded and the database answers."""
    if not loaded:
        return False
    try:
        await to_thread.run_sync(hub.registry.ping)
    except Exception:  # any driver error means "not ready"
        return False
    return True


async def model_ready(hub: ModelHub, name: str, version: int | None) -> bool:
    """Whether `name` (at `version`) can serve. An unknown model or version raises NotFound; a
    model that failed to load at start is known, but not ready."""
    if name in hub.models.failed:
        return False
    if version is None:
        hub.live(name)
        return True
    row = await hub.history.version(name, version)
    return row.status == "ready"


async def metadata(hub: ModelHub, name: str, version: int | None) -> ModelMetadata:
    spec = hub.live(name).spec
    if version is not None:
        await hub.history.version(name, version)  # NotFound for a version the model never had
    ready = [row.number for row in await hub.history.versions(name) if row.status == "ready"]
    return inference.model_metadata(name, spec, ready)


async def infer(
    hub: ModelHub,
    settings: Settings,
    name: str,
    tensors: list[InputTensor],
    *,
    outputs: list[str] | None,
    version: int | None,
) -> tuple[int, list[ResponseOutput]]:
    """The served (or named) version's answer for the one input tensor: (version, outputs)."""
    spec = hub.live(name).spec
    names = inference.output_names(spec, outputs)
    inputs = inference.input_matrix(
        tensors, spec, max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs
    )
    served, result = await hub.predict(name, inputs, version)
    return served, inference.output_tensors(spec, result, names)
