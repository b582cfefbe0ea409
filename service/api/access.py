"""Who may call a route: every route declares one `Access` dependency (tests walk the routes).

`PUBLIC` routes (health probes, the dashboard's static page) answer anyone; `READ`, `WRITE`
and `ADMIN` need a bearer token of that scope or a higher one once tokens are configured. With
no tokens configured every route is open, and the service only listens on loopback (see
`Settings`). A missing or unknown token is a 401 with `WWW-Authenticate`, a token of too low a
scope a 403; both go through the one error mapping.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam

from service.config import Settings
from service.errors import Forbidden, Unauthorized
from service.tokens import Scope, scope_of


class Access:
    """The dependency that checks a request's token against the route's `scope`."""

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope  # None: open to anyone

    async def __call__(self, request: Request) -> None:
        settings: Settings = request.app.state.settings
        if self.scope is None or not settings.auth_enabled:
            return
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        granted = scope_of(token, settings.api_tokens)
        if granted is None:
            raise Unauthorized("the bearer token is not valid")
        if granted < self.scope:
            needed = self.scope.name.lower()
            raise Forbidden(
                f"this needs a {needed} token; yours is {granted.name.lower()}", scope=needed
            )


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def declared_access(dependencies: list[DependsParam]) -> list[Access]:
    """The `Access` checks among a route's dependencies (for the tests and the docs)."""
    return [dep.dependency for dep in dependencies if isinstance(dep.dependency, Access)]


# Declared per route (`dependencies=READ`) or per router; exactly one per route.
PUBLIC = [Depends(Access(None))]
READ = [Depends(Access(Scope.READ))]
WRITE = [Depends(Access(Scope.WRITE))]
ADMIN = [Depends(Access(Scope.ADMIN))]
