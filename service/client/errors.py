"""The client's errors: what the service said went wrong, or that it could not be reached."""

from __future__ import annotations

from typing import Any

import httpx


class GradualClientError(Exception):
    """An error answer from the service: its HTTP `status` and the body's `code`, `message` and
    `field` (the offending request field, e.g. `inputs` or `spec.dropout`, when there is one)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def from_response(cls, response: httpx.Response) -> GradualClientError:
        """Reads the service's `{code, message, field}` body; a foreign body (a proxy's HTML page)
        still gives an error carrying the status and the start of the text."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            field = body.get("field")
            return cls(
                response.status_code,
                body["code"],
                str(body.get("message", "")),
                field if isinstance(field, str) else None,
            )
        text = response.text[:200] or response.reason_phrase
        return cls(response.status_code, "http_error", text)


class GradualConnectionError(GradualClientError):
    """The service could not be reached (or the answer was lost) after every allowed attempt."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "connection_error", message)
