"""Body decoding: bounded reads, strict JSON (orjson refuses NaN, Infinity and 1e400)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from service.errors import InvalidInput, MalformedBody, UnsupportedMediaType

JSON_TYPES = {"application/json", ""}


async def json_object(request: Request, *, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise UnsupportedMediaType(f"expected application/json, got {media_type}")
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    return payload


def optional_version(payload: dict[str, Any]) -> int | None:
    version = payload.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput("version must be a positive integer", field="version")
    return version
