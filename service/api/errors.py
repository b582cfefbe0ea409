"""The one place where errors become HTTP: a status per error class, one JSON body shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors
from service.api.responses import FastJSONResponse

log = logging.getLogger("gradual.api")

STATUS: dict[type[errors.GradualError], int] = {
    errors.MalformedBody: 400,
    errors.UntrustedHost: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.CrossOrigin: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.BatchSkipped: 409,
    errors.VersionUnavailable: 410,
    errors.BodyTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidInput: 422,
    errors.QueueFull: 429,
    errors.StorageFull: 507,
    errors.Unavailable: 503,
    errors.ModelUnavailable: 503,
}


def status_for(error: errors.GradualError) -> int:
    for cls in type(error).__mro__:  # a handler for a base class covers its subclasses
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, field: str | None) -> FastJSONResponse:
    return FastJSONResponse({"code": code, "message": message, "field": field}, status_code=status)


def error_headers(error: errors.GradualError) -> dict[str, str]:
    """Headers some errors must carry (RFC 6750 for tokens, RFC 9110 for Retry-After)."""
    if isinstance(error, errors.QueueFull | errors.Unavailable | errors.StorageFull):
        return {"Retry-After": str(max(1, round(error.retry_after)))}
    if isinstance(error, errors.Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="gradual"'}
    if isinstance(error, errors.Forbidden):
        challenge = f'Bearer realm="gradual", error="insufficient_scope", scope="{error.scope}"'
        return {"WWW-Authenticate": challenge}
    return {}


async def _domain_error(_request: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, errors.GradualError)
    return domain_error_response(exc)


def domain_error_response(exc: errors.GradualError) -> FastJSONResponse:
    response = error_response(status_for(exc), exc.code, exc.message, exc.field)
    response.headers.update(error_headers(exc))
    return response


def validation_problem(exc: RequestValidationError) -> tuple[str, str | None] | None:
    """The first problem as (message, field), or None when the body is not JSON at all."""
    problems = exc.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return None
    location = [str(part) for part in first.get("loc", ())]
    if location and location[0] in {"body", "path", "query", "header"}:
        location = location[1:]
    field = ".".join(location) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return message, field


async def _validation_error(_request: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, RequestValidationError)
    problem = validation_problem(exc)
    if problem is None:
        return error_response(400, "malformed_body", "the body is not valid JSON", None)
    message, field = problem
    return error_response(422, "invalid_field", message, field)


async def _http_error(_request: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail), None)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected_error(_request: Request, exc: Exception) -> FastJSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the service log", None)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GradualError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
