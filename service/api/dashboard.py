"""The dashboard: `GET /` serves one static page; its scripts and styles come from /dashboard/.

The page is plain HTML, CSS and JavaScript modules shipped in `service/static` (no build step,
no third-party code): it reads the public API from the browser like any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from service.api.access import PUBLIC
from service.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ASSET_NAME = r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$"

# The page only talks to its own origin: no inline script, no third-party anything.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

# The page and its assets are static and hold no data: open. Its API calls carry the token.
router = APIRouter(tags=["dashboard"], include_in_schema=False, dependencies=PUBLIC)


@router.get("/", response_class=FileResponse)
async def page() -> FileResponse:
    headers = HEADERS | {"Content-Security-Policy": PAGE_POLICY, "Referrer-Policy": "no-referrer"}
    return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers=headers)


@router.get("/dashboard/{asset}", response_class=FileResponse)
async def asset(asset: Annotated[str, PathParam(pattern=ASSET_NAME)]) -> FileResponse:
    path = STATIC / asset
    if not path.is_file():
        raise NotFound(f"no dashboard asset named {asset!r}", field="asset")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
