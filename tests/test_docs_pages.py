"""`/docs` (Swagger UI) and `/redoc` in headless Chromium with every request outside the
service refused: both list the API's operations from packaged files, with no CDN.

Chromium and Playwright as in tests/test_dashboard.py: skipped without them, failed under
GRADUAL_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import answers_ready, free_port, serve_process
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, PLAYWRIGHT_MISSING, WAIT_MS, missing

if PLAYWRIGHT_MISSING is None:
    from playwright.sync_api import Browser, Page, Route, expect, sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("docs-pages")
    port, log = free_port(), data / "server.log"
    process = serve_process(port, {"GRADUAL_DATA_DIR": str(data)}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url) as http:
            assert answers_ready(process, http, log), log.read_text()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    if PLAYWRIGHT_MISSING is not None:
        missing("Playwright", f"{PLAYWRIGHT_MISSING}; pip install playwright==1.65.2")
    if not CHROMIUM.is_file():
        missing("Chromium", f"no {CHROMIUM}; apt-get install -y chromium")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def offline_page(browser: Browser, server: str) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests outside the service are aborted, and listed."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    outside: list[str] = []

    def only_the_service(route: Route) -> None:
        url = route.request.url
        if url.startswith(server) or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_service)
    yield context.new_page(), outside
    context.close()


def operations(server: str) -> list[tuple[str, str]]:
    schema = httpx.get(f"{server}/openapi.json").json()
    return [(method, path) for path, item in schema["paths"].items() for method in item]


def test_swagger_ui_lists_every_operation_offline(
    server: str, offline_page: tuple[Page, list[str]]
) -> None:
    page, outside = offline_page
    page.goto(f"{server}/docs")
    listed = page.locator(".opblock")
    expect(listed).to_have_count(len(operations(server)))
    partial_fit = page.locator(".opblock-summary-path", has_text="/v1/models/{name}/partial-fit")
    expect(partial_fit.first).to_be_visible()
    assert outside == []


def test_redoc_lists_every_operation_offline(
    server: str, offline_page: tuple[Page, list[str]]
) -> None:
    page, outside = offline_page
    page.goto(f"{server}/redoc")
    listed = page.locator('[data-section-id^="operation/"]')
    expect(listed).to_have_count(len(operations(server)))
    assert outside == []


def test_the_pages_name_only_packaged_assets(server: str) -> None:
    for page in ("/docs", "/redoc"):
        response = httpx.get(f"{server}{page}")
        html = response.text
        assert "cdn." not in html
        # and what the bundles would fetch by themselves is refused by the browser
        assert response.headers["content-security-policy"].startswith("default-src 'self';")
        assert "/docs/assets/" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        response = httpx.get(f"{server}/docs/assets/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 100_000


def test_an_unknown_asset_is_a_404(server: str) -> None:
    response = httpx.get(f"{server}/docs/assets/nothing.js")
    assert (response.status_code, response.json()["field"]) == (404, "asset")
