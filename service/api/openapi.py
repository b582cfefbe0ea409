"""The OpenAPI schema tells the truth about errors: every operation documents its 4xx bodies.

FastAPI documents a 422 with its own `HTTPValidationError` shape; Gradual answers every error
as `{code, message, field}` (`ErrorBody`), and the /v2 protocol routes as `{"error"}`
(`ProtocolError`) except for refusals made at the edge before routing (413, 415, an untrusted
host), which keep the native shape. Schema-driven clients and fuzzers read this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR = {"$ref": "#/components/schemas/ErrorBody"}
PROTOCOL = {"anyOf": [{"$ref": "#/components/schemas/ProtocolError"}, ERROR]}
UNUSED = ("HTTPValidationError", "ValidationError")


def install(app: FastAPI, error_body: dict[str, Any], protocol_error: dict[str, Any]) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        schema = build()
        if not cached:
            _document_errors(schema, error_body, protocol_error)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(
    schema: dict[str, Any], error_body: dict[str, Any], protocol_error: dict[str, Any]
) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", error_body)
    components.setdefault("ProtocolError", protocol_error)
    for name in UNUSED:
        components.pop(name, None)
    for path, item in schema["paths"].items():
        body = PROTOCOL if path.startswith("/v2") else ERROR
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s.startswith("4")]:
                responses[status]["content"] = {"application/json": {"schema": body}}
            responses["4XX"] = {
                "description": "Refused: see docs/errors.md for each status and code.",
                "content": {"application/json": {"schema": body}},
            }
