"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against a real
uvicorn server in a subprocess: the page loads cleanly, streamed batches grow the curve live,
rollbacks appear as markers, and the version buttons post what they say.

Chromium comes from `apt-get install -y chromium` (never a browser download); without it, or
without the `playwright` package, the tests skip, or fail under GRADUAL_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.factories import batch, blobs, model_body, noisy_blobs, overfitting_body
from tests.live_server import free_port

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError as exc:  # the skip (or failure) comes from the `browser` fixture
    PLAYWRIGHT_MISSING: str | None = str(exc)
else:
    PLAYWRIGHT_MISSING = None

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
CHROMIUM = Path(os.environ.get("GRADUAL_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless, as root, on a machine with no outside network: nothing may phone home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 15_000


def missing(what: str, fix: str) -> None:
    message = f"{what} is not available ({fix})"
    if REQUIRE_SERVICES:
        pytest.fail(f"GRADUAL_TEST_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", "1"]


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server was not ready within 60 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `gradual serve` on a free port, on its own data dir, on the CPU."""
    data = tmp_path_factory.mktemp("dashboard")
    port, log = free_port(), data / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    env |= {"GRADUAL_DATA_DIR": str(data), "GRADUAL_DEVICE": "cpu", "GRADUAL_LOG_LEVEL": "warning"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def browser_installed() -> None:
    """Checked before anything starts: without a browser there is nothing to test."""
    if PLAYWRIGHT_MISSING is not None:
        missing("Playwright", f"{PLAYWRIGHT_MISSING}; pip install playwright==1.65.2")
    if not CHROMIUM.is_file():
        missing("Chromium", f"no {CHROMIUM}; apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Dashboard:
    """An open dashboard page and what went wrong in it (console errors, uncaught errors)."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def select(self, name: str) -> None:
        self.page.locator(f'#models tr[data-model="{name}"]').click()
        expect(self.page.locator("#detail")).to_have_attribute("data-model", name)
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "live")

    def chart_count(self, attribute: str, expected: int) -> None:
        expect(self.page.locator("#chart")).to_have_attribute(attribute, str(expected))


@pytest.fixture
def open_dashboard(browser: Browser, server: str) -> Iterator[Callable[..., Dashboard]]:
    contexts = []

    def open_page(width: int = 1360, height: int = 1000) -> Dashboard:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        opened = Dashboard(context.new_page())
        opened.page.on(
            "console",
            lambda m: opened.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        opened.page.on("pageerror", lambda error: opened.problems.append(f"page: {error}"))
        opened.page.goto(server)
        return opened

    yield open_page
    for context in contexts:
        context.close()


def create(http: httpx.Client, body: dict[str, Any]) -> str:
    response = http.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    name: str = body["name"]
    return name


def fit(http: httpx.Client, name: str, body: dict[str, Any]) -> None:
    response = http.post(f"/v1/models/{name}/partial-fit", json=body)
    assert response.status_code == 200, response.text


def add_validation(http: httpx.Client, name: str, body: dict[str, Any]) -> None:
    response = http.post(f"/v1/models/{name}/validation", json=body)
    assert response.status_code == 200, response.text


def event_count(http: httpx.Client, name: str, kind: str) -> int:
    response = http.get(f"/v1/models/{name}/events")
    assert response.status_code == 200, response.text
    return sum(event["kind"] == kind for event in response.json()["events"])


def learnable(http: httpx.Client, name: str) -> str:
    """A classifier of `blobs` with a round every 2 steps of 16 rows and a full buffer."""
    create(http, model_body(name, training={"eval_every": 2}))
    add_validation(http, name, batch(*blobs(200, seed=9)))
    return name


def test_page_loads_without_errors_and_lists_models(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    name = create(http, model_body("listed"))
    dash = open_dashboard()
    row = dash.page.locator(f'#models tr[data-model="{name}"]')
    expect(row).to_contain_text("training")
    expect(row).to_contain_text("v1 / v1")
    expect(dash.page.locator("#error")).to_be_hidden()
    assert dash.problems == []


def test_streamed_batches_grow_the_curve_without_a_reload(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    name = learnable(http, "live")
    dash = open_dashboard()
    dash.select(name)
    dash.chart_count("data-points", 0)
    dash.page.evaluate("window.notReloaded = true")
    x, y = blobs(640, seed=1)
    for start in (0, 64):
        fit(http, name, batch(x[start : start + 64], y[start : start + 64]))
    first = event_count(http, name, "round")
    assert first > 0
    dash.chart_count("data-points", first)
    for start in range(128, 640, 64):
        fit(http, name, batch(x[start : start + 64], y[start : start + 64]))
    assert event_count(http, name, "round") > first
    dash.chart_count("data-points", event_count(http, name, "round"))
    dash.chart_count("data-marker-checkpoint", event_count(http, name, "checkpoint"))
    assert dash.page.evaluate("window.notReloaded") is True
    versions = http.get(f"/v1/models/{name}/versions").json()["versions"]
    expect(dash.page.locator("#versions tbody tr")).to_have_count(len(versions))
    assert dash.problems == []


def test_rollbacks_early_stop_and_drift_appear_as_markers(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    """See `overfitting_body`: the validation loss bottoms out after ~5 rounds of `good`."""
    name = create(http, overfitting_body("overfit", rollback_tolerance=0.2, patience=6))
    add_validation(http, name, batch(*noisy_blobs(200, seed=2)))
    dash = open_dashboard()
    dash.select(name)
    x, y = noisy_blobs(60, seed=1)
    good, wrong = batch(x, y), batch(x, (y + 1) % 3)  # every label wrong
    for body in [good] * 4 + [wrong] * 4:
        fit(http, name, body)
    dash.chart_count("data-marker-rollback", 1)  # automatic: the loss degraded past tolerance
    response = http.post(f"/v1/models/{name}/rollback", json={"version": 1})
    assert response.status_code == 200, response.text
    dash.chart_count("data-marker-rollback", 2)
    for body in [good] * 12 + [wrong] * 4:  # overfits again, stops, then the world drifts
        fit(http, name, body)
    dash.chart_count("data-marker-early-stop", event_count(http, name, "early_stop"))
    dash.chart_count("data-marker-drift", event_count(http, name, "drift"))
    dash.chart_count("data-marker-rollback", event_count(http, name, "rollback"))
    dash.chart_count("data-points", event_count(http, name, "round"))
    expect(dash.page.locator("#legend")).to_contain_text("Rollback (3)")
    model = http.get(f"/v1/models/{name}").json()  # the list and stats settle on the last poll
    settled = f"v{model['served_version']} / v{model['head_version']}"
    expect(dash.page.locator(f'#models tr[data-model="{name}"]')).to_contain_text(settled)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    dash.page.screenshot(path=SCREENSHOT, full_page=True)
    assert dash.problems == []


def test_promote_button_posts_the_version_with_the_saved_token(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    name = learnable(http, "promoted")
    fit(http, name, batch(*blobs(128, seed=1)))
    dash = open_dashboard()
    dash.select(name)
    dash.page.locator("#token").fill("s3cret")
    dash.page.locator("#token-form button[type=submit]").click()
    button = dash.page.locator('#versions tr[data-version="1"] button[data-action="promote"]')
    with dash.page.expect_request(lambda r: r.url.endswith("/promote")) as sent:
        button.click()
    assert sent.value.headers["authorization"] == "Bearer s3cret"
    assert sent.value.post_data_json == {"version": 1}
    expect(dash.page.locator('#versions tr[data-version="1"]')).to_have_class("served")
    assert http.get(f"/v1/models/{name}").json()["served_version"] == 1
    assert dash.page.evaluate("sessionStorage.getItem('gradual.token')") == "s3cret"
    assert dash.problems == []


def test_a_refused_rollback_shows_the_servers_message(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    name = learnable(http, "refused")
    dash = open_dashboard()
    dash.select(name)
    refusal = {"code": "forbidden", "message": "a write token is required", "field": None}
    dash.page.route("**/rollback", lambda route: route.fulfill(status=403, json=refusal))
    dash.page.once("dialog", lambda dialog: dialog.accept())
    dash.page.locator('#versions tr[data-version="1"] button[data-action="rollback"]').click()
    expect(dash.page.locator("#error")).to_be_visible()
    expect(dash.page.locator("#error-text")).to_contain_text("a write token is required")
    assert event_count(http, name, "rollback") == 0


def test_a_race_shows_every_candidates_curve_side_by_side(
    http: httpx.Client, open_dashboard: Callable[[], Dashboard]
) -> None:
    search = {"variations": {"hidden": [[1], [16], [32]]}, "budget": 2}
    body = model_body("race", training={"holdout": 0.25, "eval_every": 2}) | {"search": search}
    name = create(http, body)
    dash = open_dashboard()
    dash.select(name)
    x, y = blobs(400, seed=6)
    for start in range(0, 400, 40):
        fit(http, name, batch(x[start : start + 40], y[start : start + 40]))
    expect(dash.page.locator("#candidates-panel")).to_be_visible()
    expect(dash.page.locator("#candidates polyline")).to_have_count(3)
    expect(dash.page.locator("#candidates-legend li.candidate-retired")).to_have_count(2)
    expect(dash.page.locator("#candidates-legend")).to_contain_text("leader")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dash.page.locator("#candidates-panel").screenshot(path=SCREENSHOT.parent / "race.png")
    assert dash.problems == []


# -- layout: every cell inside its panel, long names cut, a reopened race drawn forward -------

LONG_NAME = "a-model-whose-name-is-far-too-long-for-the-models-column-of-it-all"[:64]
# Cells (th, td) whose box leaves their panel's, and a page wider than the window.
CELLS_OUTSIDE_PANELS = """() => {
  const found = [];
  for (const panel of document.querySelectorAll(".panel")) {
    if (panel.offsetParent === null) continue;
    const p = panel.getBoundingClientRect();
    for (const cell of panel.querySelectorAll("th, td")) {
      const c = cell.getBoundingClientRect();
      if (c.left < p.left - 0.5 || c.right > p.right + 0.5 || c.bottom > p.bottom + 0.5) {
        const title = panel.querySelector("h2, h3")?.textContent;
        const text = cell.textContent.trim().slice(0, 24);
        const where = `[${c.left | 0}, ${c.right | 0}] in [${p.left | 0}, ${p.right | 0}]`;
        found.push(`${title}: "${text}" ${where}`);
      }
    }
  }
  const width = document.documentElement.scrollWidth;
  if (width > window.innerWidth) found.push(`page ${width} px wide in ${window.innerWidth}`);
  return found;
}"""
# Per polyline of the candidates chart: does any point lie left of the one before it?
LINES_GOING_BACK = """() => [...document.querySelectorAll("#candidates polyline")].filter((l) => {
  const xs = l.getAttribute("points").trim().split(/\\s+/).map((p) => Number(p.split(",")[0]));
  return xs.some((x, i) => i > 0 && x < xs[i - 1]);
}).length"""


@pytest.fixture(scope="module")
def long_named(http: httpx.Client) -> str:
    """A model with a 64-character name and a few versions with metrics."""
    name = learnable(http, LONG_NAME)
    x, y = blobs(256, seed=3)
    for start in range(0, 256, 64):
        fit(http, name, batch(x[start : start + 64], y[start : start + 64]))
    assert http.post(f"/v1/models/{name}/versions").status_code == 201
    return name


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (800, 1000)])
def test_every_cell_stays_inside_its_panel_and_long_names_are_cut(
    http: httpx.Client, open_dashboard: Callable[..., Dashboard], long_named: str,
    width: int, height: int,
) -> None:  # fmt: skip
    dash = open_dashboard(width, height)
    dash.select(long_named)
    versions = http.get(f"/v1/models/{long_named}/versions").json()["versions"]
    expect(dash.page.locator("#versions tbody tr")).to_have_count(len(versions))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dash.page.screenshot(path=SCREENSHOT.parent / f"dashboard-{width}x{height}.png", full_page=True)
    outside = dash.page.evaluate(CELLS_OUTSIDE_PANELS)
    assert outside == [], "\n".join(outside)
    listed = dash.page.locator(f'#models tr[data-model="{long_named}"] button.name')
    assert listed.evaluate("n => n.scrollWidth > n.clientWidth")  # cut to fit its column
    for name in (listed, dash.page.locator("#model-title")):
        expect(name).to_have_attribute("title", long_named)  # the whole name, on hover
        assert name.evaluate("n => getComputedStyle(n).textOverflow") == "ellipsis"
    assert dash.problems == []


def test_a_reopened_race_is_drawn_without_lines_going_back(
    http: httpx.Client, open_dashboard: Callable[..., Dashboard]
) -> None:
    """The recipe of tests/api/test_race.py: the race stops, drift reopens it, rounds go on."""
    search = {"variations": {"hidden": [[4], [16], [32]]}, "budget": 1}
    training = {"holdout": 0.25, "eval_every": 2, "stopping_threshold": 0.75, "buffer_size": 200}
    name = create(http, model_body("reopened", training=training) | {"search": search})
    x, y = blobs(2000, seed=7)
    for start in range(0, 2000, 40):
        response = http.post(
            f"/v1/models/{name}/partial-fit",
            json=batch(x[start : start + 40], y[start : start + 40]),
        )
        assert response.status_code == 200, response.text
        if response.json()["state"] == "stopped":
            break
    moved = (y + 1) % 3  # the world moves: drift resumes training and reopens the race
    for start in range(0, 600, 40):
        fit(http, name, batch(x[start : start + 40], moved[start : start + 40]))
    assert event_count(http, name, "race_reopened") == 1
    rounds = [
        p["round"]
        for p in http.get(f"/v1/models/{name}/candidates").json()["candidates"][0]["history"]
    ]
    assert any(b <= a for a, b in itertools.pairwise(rounds))  # numbered from 1 again
    dash = open_dashboard(1280, 800)
    dash.select(name)
    expect(dash.page.locator("#candidates-panel")).to_be_visible()
    expect(dash.page.locator("#candidates")).to_have_attribute("data-candidates", "3")
    assert dash.page.evaluate(LINES_GOING_BACK) == 0
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dash.page.locator("#candidates-panel").screenshot(path=SCREENSHOT.parent / "race-reopened.png")
    assert dash.problems == []
