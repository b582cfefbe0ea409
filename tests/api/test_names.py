"""Model names that try path traversal are a 422 naming `name` on every route that takes one.

The names reach the server percent-encoded (as a client library sends them); `..%2fx` decodes
to `../x`, which must not fall through to a 404 or to another route.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.api.guards import valid_name_in
from service.app import ROUTERS
from tests.factories import model_body

TRAVERSALS = [
    "..%2fx",  # ../x
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2fx",  # ../x, dots encoded too
    "%252e%252e%252fx",  # double-encoded: %2e%2e%2fx after one decoding
    "..%5cx",  # ..\\x
    "a%5cb",
    "%2e%2e",  # ..
    "x" * 300,
    "m%00",  # NUL
    "%EF%BD%8D",  # fullwidth m, a confusable of "m"
    "M",
    "-m",
]
NAMED_ROUTES = sorted(
    (method, route.path)
    for router in ROUTERS
    for route in router.routes
    if isinstance(route, APIRoute) and "{name}" in route.path
    for method in route.methods
)


@pytest.fixture
def model(client: TestClient) -> TestClient:
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


def test_there_are_named_routes_on_both_apis() -> None:
    paths = {path for _, path in NAMED_ROUTES}
    assert len(NAMED_ROUTES) >= 20
    assert any(p.startswith("/v1/") for p in paths)
    assert any(p.startswith("/v2/") for p in paths)


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_traversal_name_is_refused_on_every_named_route(model: TestClient, name: str) -> None:
    wrong = []
    for method, template in NAMED_ROUTES:
        path = template.replace("{name}", name).replace("{version}", "1")
        body = {} if method in {"POST", "PATCH"} else None
        response = model.request(method, path, json=body)
        if template.startswith("/v2/"):
            ok = response.status_code == 400 and response.json()["error"].startswith("name:")
        else:
            ok = response.status_code == 422 and response.json()["field"] == "name"
        if not ok:
            wrong.append((method, path[:80], response.status_code, response.text[:120]))
    assert wrong == []


def test_the_model_and_its_files_are_untouched_by_the_attempts(
    model: TestClient, tmp_path: Path
) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in TRAVERSALS:
        model.delete(f"/v1/models/{name}")
        model.post(f"/v1/models/{name}/partial-fit", json={"inputs": [[1, 2, 3, 4]]})
    assert model.get("/v1/models/m").status_code == 200
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [f for f in files if "wal" not in f.parts] == [f for f in before if "wal" not in f.parts]
    assert all(str(f).startswith("data") for f in files)  # nothing written outside the data dir


@pytest.mark.parametrize("name", ["../x", "..\\x", "x" * 300, "a/b", "m\u0000", "\uff4d"])
def test_a_traversal_name_at_create_is_refused(client: TestClient, name: str) -> None:
    response = client.post("/v1/models", json=model_body(name))
    assert response.status_code == 422
    assert response.json()["field"] == "name"


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        (b"/v1/models/../x", False),  # a raw client's literal dots, never normalized
        (b"/v1/models/..", False),
        (b"/v2/models/../x/infer", False),
        (b"/v1/models/m/predict", True),
        (b"/v1/models/a.b-c_d/versions/3", True),
        (b"/v1/models", True),
        (b"/v1/models/", True),
        (b"/healthz", True),
    ],
)
def test_names_are_checked_on_the_raw_path(raw: bytes, valid: bool) -> None:
    assert valid_name_in(raw) is valid


def test_a_valid_unknown_name_is_still_a_404(client: TestClient) -> None:
    response = client.get("/v1/models/nobody")
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
