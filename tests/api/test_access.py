"""Access control over the app's own route list: a new route cannot be added unprotected.

Every route declares exactly one `Access` dependency, and the table below says which scope
each one must have; a route missing from the table, or declared with another scope, fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from service.api.access import declared_access
from service.app import ROUTERS, create_app
from service.cli.main import app as cli
from service.config import Settings
from service.tokens import Scope
from tests.factories import model_body

TOKENS = "read=r-token,write=w-token,admin=a-token"
READ, WRITE, ADMIN = ({"authorization": f"Bearer {t}"} for t in ("r-token", "w-token", "a-token"))
M, V = "/v1/models", "/v1/models/{name}"

EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None, ("GET", "/readyz"): None,
    ("GET", "/"): None, ("GET", "/dashboard/{asset}"): None,
    ("GET", "/docs"): None, ("GET", "/docs/oauth2-redirect"): None, ("GET", "/redoc"): None,
    ("GET", "/docs/assets/{asset}"): None,
    ("GET", "/v2/health/live"): None, ("GET", "/v2/health/ready"): None,
    ("GET", "/metrics"): "read", ("GET", "/v2"): "read",
    ("GET", M): "read", ("GET", V): "read", ("POST", f"{V}/predict"): "read",
    ("GET", f"{V}/validation"): "read", ("GET", f"{V}/versions"): "read",
    ("GET", f"{V}/versions/{{version}}"): "read", ("GET", f"{V}/events"): "read",
    ("GET", f"{V}/events/stream"): "read", ("GET", f"{V}/history"): "read",
    ("GET", f"{V}/candidates"): "read",
    ("GET", "/v2/models/{name}"): "read", ("GET", "/v2/models/{name}/ready"): "read",
    ("GET", "/v2/models/{name}/versions/{version}"): "read",
    ("GET", "/v2/models/{name}/versions/{version}/ready"): "read",
    ("POST", "/v2/models/{name}/infer"): "read",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "read",
    ("POST", f"{V}/partial-fit"): "write", ("POST", f"{V}/validation"): "write",
    ("POST", f"{V}/stop"): "write", ("POST", f"{V}/resume"): "write",
    ("POST", f"{V}/versions"): "write",
    ("POST", M): "admin", ("DELETE", V): "admin", ("POST", f"{V}/promote"): "admin",
    ("POST", f"{V}/rollback"): "admin", ("PATCH", f"{V}/training"): "admin",
    ("GET", "/v1/cluster"): "admin",
}  # fmt: skip
RANK = {"read": Scope.READ, "write": Scope.WRITE, "admin": Scope.ADMIN}
QUERY = {f"{V}/events/stream": "?max_events=1"}  # the stream then ends after `created`


def declared_routes() -> dict[tuple[str, str], str | None]:
    found: dict[tuple[str, str], str | None] = {}
    for route in (route for router in ROUTERS for route in router.routes):
        assert isinstance(route, APIRoute)
        checks = declared_access(route.dependencies)
        assert len(checks) == 1, f"{route.path} declares {len(checks)} Access dependencies"
        scope = checks[0].scope
        for method in route.methods:
            found[(method, route.path)] = scope.name.lower() if scope else None
    return found


def concrete(path: str) -> str:
    filled = path.replace("{name}", "m").replace("{version}", "1").replace("{asset}", "api.js")
    return filled + QUERY.get(path, "")


def protected(at_least: str | None = None) -> list[tuple[str, str]]:
    return [
        (method, path)
        for (method, path), scope in EXPECTED.items()
        if scope and (at_least is None or RANK[scope] >= RANK[at_least])
    ]


@pytest.fixture
def guarded(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The app with tokens of every scope, and a model `m`."""
    with TestClient(create_app(make_settings(api_tokens=TOKENS))) as client:
        assert client.post(M, json=model_body("m"), headers=ADMIN).status_code == 201
        yield client


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {} if method in {"POST", "PATCH"} else None
    return client.request(method, concrete(path), json=body, headers=headers)


def test_every_route_declares_the_scope_the_table_gives_it() -> None:
    assert declared_routes() == EXPECTED


def test_every_operation_in_the_schema_comes_from_a_checked_router() -> None:
    """A route added straight to the app, or a router left out of ROUTERS, shows here."""
    schema = create_app(Settings(data_dir=Path("unused"))).openapi()
    operations = {(m.upper(), path) for path, item in schema["paths"].items() for m in item}
    assert operations <= set(EXPECTED)


def test_every_protected_route_without_a_token_is_401_with_a_bearer_challenge(
    guarded: TestClient,
) -> None:
    wrong = []
    for method, path in protected():
        response = call(guarded, method, path, {})
        body = response.json()
        challenge = response.headers.get("www-authenticate", "")
        shape = body.get("code") == "unauthorized" or "bearer token" in body.get("error", "")
        if response.status_code != 401 or not challenge.startswith("Bearer") or not shape:
            wrong.append((method, path, response.status_code, body))
    assert wrong == []


def test_a_read_token_is_403_on_every_write_and_admin_route(guarded: TestClient) -> None:
    wrong = []
    for method, path in protected(at_least="write"):
        response = call(guarded, method, path, READ)
        needed = EXPECTED[(method, path)]
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 403 or response.json()["code"] != "forbidden":
            wrong.append((method, path, response.status_code))
        elif f'scope="{needed}"' not in challenge:
            wrong.append((method, path, challenge))
    assert wrong == []


def test_a_write_token_is_403_on_every_admin_route(guarded: TestClient) -> None:
    statuses = {(m, p): call(guarded, m, p, WRITE).status_code for m, p in protected("admin")}
    assert set(statuses.values()) == {403}


def test_each_scope_passes_the_routes_it_covers(guarded: TestClient) -> None:
    """Read, write and admin get past the check (DELETE last: it removes the model)."""
    refused = []
    for token, scope in ((READ, "read"), (WRITE, "write"), (ADMIN, "admin")):
        routes = sorted(protected(), key=lambda route: route[0] == "DELETE")
        for method, path in routes:
            if RANK[EXPECTED[(method, path)] or "read"] > RANK[scope]:
                continue
            status = call(guarded, method, path, token).status_code
            if status in {401, 403} or status >= 500:
                refused.append((scope, method, path, status))
    assert refused == []


def test_the_scoped_calls_do_what_they_say(guarded: TestClient) -> None:
    batch = {"inputs": [[0.1, 0.2, 0.3, 0.4]] * 4, "targets": [0, 1, 2, 0]}
    assert guarded.post(f"{M}/m/partial-fit", json=batch, headers=WRITE).json()["trained"] == 4
    predicted = guarded.post(f"{M}/m/predict", json={"inputs": batch["inputs"]}, headers=READ)
    assert len(predicted.json()["predictions"]) == 4
    assert guarded.delete(f"{M}/m", headers=ADMIN).status_code == 204
    assert guarded.get(M, headers=READ).json()["models"] == []


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Basic cj10b2tlbg==", "Bearer", "r-token", "Bearer  "]
)
def test_an_unknown_or_malformed_token_is_401(guarded: TestClient, header: str) -> None:
    response = guarded.get(M, headers={"authorization": header})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="gradual"'


def test_the_protocol_routes_answer_401_in_the_protocol_shape(guarded: TestClient) -> None:
    response = guarded.post("/v2/models/m/infer", json={"inputs": []})
    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_probes_the_page_and_the_schema_stay_open(guarded: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.get("/dashboard/api.js").status_code == 200
    assert guarded.get("/openapi.json").status_code == 200


def test_rotated_tokens_of_one_scope_both_work(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_tokens="read=old-one,read=new-one")
    with TestClient(create_app(settings)) as client:
        for token in ("old-one", "new-one"):
            response = client.get(M, headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200


def test_a_token_file_is_read_with_comments_and_merged(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated 2026-11\nadmin = file-admin\n\nread=file-read  # ci\n")
    settings = make_settings(api_tokens="write=env-write", api_tokens_file=tokens)
    assert sorted(scope for scope, _ in settings.api_tokens) == ["admin", "read", "write"]
    with TestClient(create_app(settings)) as client:
        headers = {"authorization": "Bearer file-admin"}
        assert client.post(M, json=model_body("m"), headers=headers).status_code == 201


def test_an_empty_token_file_is_refused_rather_than_leaving_the_api_open(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# nothing yet\n")
    with pytest.raises(ValidationError, match="holds no scope=token pair"):
        Settings(api_tokens_file=tokens)


def test_settings_keep_only_digests_of_the_tokens(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_tokens=TOKENS)
    dumped = repr(settings) + settings.model_dump_json()
    assert not re.search(r"[rwa]-token", dumped)
    assert all(len(digest) == 64 for _, digest in settings.api_tokens)


@pytest.mark.parametrize("value", ["owner=x", "read", "read=", "admin=a,=b"])
def test_a_malformed_token_setting_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(api_tokens=value)
    assert "input_value" not in str(refused.value)


def test_a_network_bind_without_tokens_is_refused_unless_insecure() -> None:
    with pytest.raises(ValidationError, match="without API tokens"):
        Settings(host="0.0.0.0")
    assert Settings(host="0.0.0.0", insecure=True).host == "0.0.0.0"
    assert Settings(host="0.0.0.0", api_tokens="admin=a").host == "0.0.0.0"
    assert Settings(host="::1").host == "::1"


def test_serve_refuses_a_network_bind_without_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADUAL_API_TOKENS", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--insecure" in result.output


def test_the_start_log_says_the_api_is_open_on_loopback(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(make_settings())):
        pass
    assert "no API tokens configured" in caplog.text
    assert "127.0.0.1 (loopback) only" in caplog.text


# -- trusted hosts and CORS ------------------------------------------------------------------


def test_an_untrusted_host_header_is_refused(client: TestClient) -> None:
    response = client.get("/healthz", headers={"host": "rebind.attacker.example"})
    assert response.status_code == 400
    assert response.json()["code"] == "untrusted_host"
    assert client.get("/healthz", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200


def test_trusted_hosts_take_wildcard_subdomains(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(trusted_hosts="*.corp.example,testserver"))) as c:
        assert c.get("/healthz", headers={"host": "ml.corp.example"}).status_code == 200
        assert c.get("/healthz", headers={"host": "corp.example.evil"}).status_code == 400


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"]
)
def test_a_cross_site_write_is_refused(client: TestClient, origin: str) -> None:
    """A bodiless POST passes the content-type check: the Origin check stops it (CSRF)."""
    assert client.post(M, json=model_body("m")).status_code == 201
    response = client.post(f"{M}/m/stop", headers={"origin": origin})
    assert (response.status_code, response.json()["code"]) == (403, "cross_origin")
    assert client.get(f"{M}/m").json()["state"] == "training"
    assert client.get(f"{M}/m", headers={"origin": origin}).status_code == 200  # reads: CORS


def test_same_origin_and_cors_origin_writes_pass(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(cors_origins="https://ui.example"))) as client:
        assert client.post(M, json=model_body("m")).status_code == 201
        for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "https://ui.example"):
            response = client.post(f"{M}/m/stop", headers={"origin": origin})
            assert response.status_code == 200, (origin, response.text)


def test_cors_is_off_by_default(client: TestClient) -> None:
    origin = {"origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get(M, headers=origin).headers
    preflight = client.options(
        M, headers=origin | {"access-control-request-method": "POST"}
    )  # no CORS: nothing allows the request
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(cors_origins="https://ui.example")
    with TestClient(create_app(settings)) as client:
        asked = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        }
        ok = client.options(M, headers={"origin": "https://ui.example"} | asked)
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        other = client.options(M, headers={"origin": "https://evil.example"} | asked)
        assert "access-control-allow-origin" not in other.headers
