"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc`, with nothing from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so offline (or behind a proxy that
blocks it) they are blank. Here the same pages load the scripts and styles that the
`fastapi-offline` package ships (Swagger UI's and ReDoc's release files, MIT and Apache-2.0)
from `/docs/assets/`: the docs need nothing outside the service, as the dashboard does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from service.api.access import PUBLIC
from service.errors import NotFound

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
ASSET_NAME = r"^[a-z0-9][a-z0-9_.-]*\.(js|css|png)$"
TITLE = "Gradual"
# Nothing from outside the service, even what the bundles would fetch on their own (ReDoc's
# footer logo comes from its CDN): the browser refuses it without sending a request. Both
# pages start from an inline script and style with inline styles, as their bundles expect.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

# Like the OpenAPI schema they render, the pages hold no data: open.
router = APIRouter(tags=["docs"], include_in_schema=False, dependencies=PUBLIC)


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
    )
    return _confined(page)


@router.get("/docs/oauth2-redirect", response_class=HTMLResponse)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/docs/assets/favicon.png",
        with_google_fonts=False,
    )
    return _confined(page)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    return page


@router.get("/docs/assets/{asset}", response_class=FileResponse)
async def asset(asset: Annotated[str, PathParam(pattern=ASSET_NAME)]) -> FileResponse:
    path = ASSETS / asset
    if not path.is_file():
        raise NotFound(f"no documentation asset named {asset!r}", field="asset")
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)
