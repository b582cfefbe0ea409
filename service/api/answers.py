"""Predict and partial-fit answers from a body already read: what the routes of
`service.api.models` and the direct path (`service.api.direct`) both return."""

from __future__ import annotations

from fastapi import Response, status

from service.api.bodies import fields_from, optional_version
from service.api.fitting import FIT_KEYS, labelled_batch
from service.api.responses import FastJSONResponse
from service.api.schemas import QueuedResponse
from service.api.views import fit_view
from service.config import Settings
from service.runtime.batches import matrix_from
from service.runtime.hub import ModelHub

PREDICT_KEYS = {"inputs", "version"}


async def predict_answer(
    name: str, kind: str, body: bytes, hub: ModelHub, settings: Settings, version: int | None
) -> Response:
    spec = hub.live(name).spec
    fields = fields_from(kind, body, allowed=PREDICT_KEYS)
    inputs = matrix_from(
        fields.get("inputs"), field="inputs", features=spec.inputs,
        max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs,
    )  # fmt: skip
    version, result = await hub.predict(name, inputs, optional_version(fields) or version)
    # Built here and serialised by orjson: the hot path skips response-model validation.
    answer = {"model": name, "version": version, "predictions": result.predictions}
    return FastJSONResponse(answer | {"probabilities": result.probabilities})


async def fit_answer(
    name: str, kind: str, body: bytes, hub: ModelHub, settings: Settings, *, wait: bool,
    batch_id: str | None,
) -> Response:  # fmt: skip
    spec = hub.live(name).spec
    fields = fields_from(kind, body, allowed=FIT_KEYS)
    batch = labelled_batch({"batch_id": batch_id} | fields, spec, settings)
    outcome = await hub.partial_fit(
        name, batch.inputs, batch.targets, batch_id=batch.batch_id, wait=wait
    )
    if outcome.queued is not None:
        queued = QueuedResponse(model=name, batch_id=batch.batch_id, queued=outcome.queued)
        return FastJSONResponse(queued.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    # Serialised by orjson: FastAPI would validate the response model a second time.
    return FastJSONResponse(fit_view(hub.live(name), outcome, batch.batch_id).model_dump())
