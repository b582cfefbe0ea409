"""The field layout of a stream entry, for producers and for the owner that applies it.

A mini-batch is `XADD gradual:{model}:batches * batch_id <id> inputs <JSON rows> targets
<JSON>`, or `body <the JSON body partial-fit takes>`, or, binary, `arrays <safetensors bytes
holding "inputs" and "targets">`. Commands
that replicas add carry `kind` (stop, resume, training, checkpoint, rollback, promote,
validation) and `args` (a JSON object). Nothing is unpickled: JSON and safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from models.spec import NetworkSpec
from service.config import Settings
from service.errors import InvalidInput, MalformedBody
from service.runtime.batches import decode_json, matrix_from, targets_from

KINDS = {"fit", "validation", "stop", "resume", "training", "checkpoint", "rollback", "promote"}
LABELLED = {"fit", "validation"}
MAX_BATCH_ID = 128


@dataclass(frozen=True)
class Entry:
    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    batch_id: str | None = None


def encode(entry: Entry) -> dict[str, bytes]:
    fields = {"kind": entry.kind.encode(), "args": orjson.dumps(entry.args)}
    if entry.arrays:
        fields["arrays"] = bytes(save_arrays(entry.arrays))
    if entry.batch_id is not None:
        fields["batch_id"] = entry.batch_id.encode()
    return fields


def decode(raw: dict[bytes, bytes], spec: NetworkSpec, settings: Settings) -> Entry:
    """Validates an entry as partial-fit validates a request; refusals name the field."""
    fields = {key.decode(errors="replace"): value for key, value in raw.items()}
    kind = fields.get("kind", b"fit").decode(errors="replace")
    if kind not in KINDS:
        raise InvalidInput(f"unknown entry kind {kind!r}", field="kind")
    args = _json_object(fields.get("args", b"{}"))
    batch_id = _batch_id(fields.get("batch_id"))
    if kind not in LABELLED:
        return Entry(kind, args)
    inputs, targets, given = _labelled(fields)
    batch_id = batch_id or _batch_id(given)
    x = matrix_from(
        inputs, field="inputs", features=spec.inputs, max_rows=settings.max_batch_rows,
        max_abs=settings.max_input_abs,
    )  # fmt: skip
    y = targets_from(targets, spec=spec, rows=x.shape[0], max_abs=settings.max_input_abs)
    return Entry(kind, args, {"inputs": x, "targets": y}, batch_id)


def _labelled(fields: dict[str, bytes]) -> tuple[Any, Any, bytes | None]:
    """Inputs, targets and the body's own batch id, if the entry carries a whole body."""
    if "body" in fields:  # the JSON body partial-fit takes over HTTP, as it is
        return _from_body(decode_json(fields["body"]))
    if "arrays" in fields:
        try:
            arrays = load_arrays(fields["arrays"])
        except (SafetensorError, ValueError) as exc:
            raise InvalidInput(f"arrays is not a safetensors blob: {exc}", field="arrays") from None
        if set(arrays) != {"inputs", "targets"}:
            raise InvalidInput("arrays must hold exactly inputs and targets", field="arrays")
        return arrays["inputs"], arrays["targets"], None
    for name in ("inputs", "targets"):
        if name not in fields:
            raise InvalidInput(f"{name} is missing", field=name)
    return _json(fields["inputs"], "inputs"), _json(fields["targets"], "targets"), None


def _from_body(body: Any) -> tuple[Any, Any, bytes | None]:
    if not isinstance(body, dict):
        raise InvalidInput("a batch must be a JSON object", field="body")
    unknown = sorted(set(body) - {"inputs", "targets", "batch_id"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    given = body.get("batch_id")
    if given is not None and (isinstance(given, bool) or not isinstance(given, str | int)):
        raise InvalidInput("batch_id must be a string or an integer", field="batch_id")
    return body.get("inputs"), body.get("targets"), None if given is None else str(given).encode()


def _json(value: bytes, name: str) -> Any:
    try:
        return decode_json(value)
    except MalformedBody:
        raise InvalidInput(f"{name} is not valid JSON", field=name) from None


def _json_object(value: bytes) -> dict[str, Any]:
    parsed = _json(value, "args")
    if not isinstance(parsed, dict):
        raise InvalidInput("args must be a JSON object", field="args")
    return parsed


def _batch_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode(errors="replace")
    if not text or len(text) > MAX_BATCH_ID:
        raise InvalidInput(f"batch_id must be 1..{MAX_BATCH_ID} characters", field="batch_id")
    return text
