"""The deployment on a real Docker engine: docker/Dockerfile builds and runs, and
docker/docker-compose.yml comes up, serves, survives a killed replica and stops cleanly.

No Docker Hub here: the upstream images are stood in for by scripts/docker-standins (Debian
packages) through the STACK_*_IMAGE settings, and torch comes from the wheel on this disk
(TORCH_WHEELS). One image and one stack serve every test, in file order; the figures measured
go to test-artifacts/docker-figures.json."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.deploy.dockerengine import (
    IMAGE,
    TOKENS,
    Stack,
    build_image,
    docker,
    inside,
    record,
    run_procedure,
    running_engine,
    stack_env,
    standin_images,
)
from tests.factories import PINNED_TRAINING, batches, digits_split, ndjson
from tests.live_server import free_port

pytestmark = pytest.mark.docker
NEXT_IMAGE = f"{IMAGE}-next"  # a second release of the image, for the upgrade
HEALTHY_WITHIN_S = 120
STOP_GRACE_S = 60  # the api service's stop_grace_period
TAKEOVER_WITHIN_S = 90  # the lease's 10 s TTL, a restart, the stream's replay


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with running_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log"):
        yield


@pytest.fixture(scope="module")
def images(engine: None) -> Iterator[dict[str, str]]:
    started = time.monotonic()
    standins = standin_images()
    built = time.monotonic()
    build_image(standins["STACK_PYTHON_IMAGE"])
    record(standins_s=round(built - started, 1), image_build_s=round(time.monotonic() - built, 1))
    yield standins
    # The engine's cache outlives the run: keep the image, drop what this run superseded.
    docker("rmi", NEXT_IMAGE, check=False)
    docker("image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=gradual")


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    home = tmp_path_factory.mktemp("stack")
    running = Stack(home, f"gradualtest{home.name[-6:].strip('_')}", stack_env(images, port), port)
    running.write()
    started = time.monotonic()
    try:
        running.ok("up", "-d", "--wait", "--no-build", timeout=HEALTHY_WITHIN_S + 60)
        record(up_to_healthy_s=round(time.monotonic() - started, 1))
        yield running
    finally:
        running.run("down", "-v", "--timeout", str(STOP_GRACE_S), timeout=180)


def _client(stack: Stack, scope: str | None = "admin") -> httpx.Client:
    headers = {"authorization": f"Bearer {TOKENS[scope]}"} if scope else {}
    return httpx.Client(base_url=stack.url, headers=headers, timeout=60)


def _digits_model(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"task": "classification", "inputs": 64, "outputs": 10, "hidden": [32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": PINNED_TRAINING,  # every row trains: samples_seen counts rows exactly
        "seed": 0,
    }


def _trained(stack: Stack, model: str, samples: int) -> str:
    """The replica that owns `model`, once it has trained on exactly `samples` rows."""
    deadline = time.monotonic() + TAKEOVER_WITHIN_S
    seen = None
    while time.monotonic() < deadline:
        owner = _owner(stack, model)
        seen = inside(owner, "GET", f"/v1/models/{model}")[1]["samples_seen"]
        if seen == samples:
            return owner
        time.sleep(1)
    raise AssertionError(f"{model} trained on {seen} rows, not {samples}")


def _owner(stack: Stack, model: str) -> str:
    deadline = time.monotonic() + TAKEOVER_WITHIN_S
    while time.monotonic() < deadline:
        for name in stack.names("api"):
            _, ready = inside(name, "GET", "/readyz")
            if model in ready["detail"].get("owned", []):
                return name
        time.sleep(0.5)
    raise AssertionError(f"no replica owns {model}")


def _checkpoint(owner: str, model: str) -> int:
    status, body = inside(owner, "POST", f"/v1/models/{model}/versions")
    assert status == 201, body
    version: int = body["version"]
    return version


def _answers(stack: Stack, model: str, inputs: list[list[float]], version: int) -> list[Any]:
    """Each running replica's answer to the same predict request, asked of it directly."""
    answers = []
    for name in stack.names("api"):
        request = {"inputs": inputs, "version": version}
        status, body = inside(name, "POST", f"/v1/models/{model}/predict", request)
        assert status == 200, body
        answers.append(body)
    return answers


def _served(stack: Stack, model: str) -> set[int]:
    return {
        inside(n, "GET", f"/v1/models/{model}")[1]["served_version"] for n in stack.names("api")
    }


# -- the image -----------------------------------------------------------------------------


def test_image_runs_as_uid_10001_prints_the_cli_and_turns_healthy(images: dict[str, str]) -> None:
    assert docker("run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == "10001"
    cli = docker("run", "--rm", IMAGE, "--help").stdout
    assert "serve" in cli
    assert "migrate" in cli
    tokens = f"GRADUAL_API_TOKENS=admin={TOKENS['admin']}"
    container = docker("run", "-d", "-e", tokens, IMAGE).stdout.strip()
    try:
        assert _health(container) == "healthy", docker("logs", container, check=False).stderr
    finally:
        docker("rm", "-f", container)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    record(image_size_mb=round(size / 1e6))
    assert size < 3e9


def _health(container: str) -> str:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    status = "starting"
    while status == "starting" and time.monotonic() < deadline:
        time.sleep(1)
        status = docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()
    return status


# -- the stack -----------------------------------------------------------------------------


def test_stack_migrates_once_and_only_the_balancer_publishes_a_port(stack: Stack) -> None:
    containers = {c["Name"]: c for c in stack.containers()}
    by_service: dict[str, list[dict[str, Any]]] = {}
    for container in containers.values():
        by_service.setdefault(container["Service"], []).append(container)
    (migrate,) = by_service["migrate"]
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0)
    assert [c["Health"] for c in by_service["api"]] == ["healthy", "healthy"]
    published = {
        c["Service"]: [(p["URL"], p["PublishedPort"]) for p in c["Publishers"] or []]
        for c in containers.values()
    }
    published = {service: [p for p in ports if p[1]] for service, ports in published.items()}
    assert published["balancer"] == [("127.0.0.1", stack.port)]
    assert all(ports == [] for service, ports in published.items() if service != "balancer")
    for service in ("postgres", "redis"):
        (container,) = by_service[service]
        bindings = docker("inspect", "-f", "{{json .HostConfig.PortBindings}}", container["Name"])
        assert json.loads(bindings.stdout) in ({}, None)


def test_tokens_guard_the_balancer(stack: Stack) -> None:
    with _client(stack, None) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
    with _client(stack, "admin") as admin:
        assert admin.post("/v1/models", json=_digits_model("guarded")).status_code == 201
    batch = batches(*digits_split()[::2], 16)[0]
    with _client(stack, "read") as reader:
        refused = reader.post("/v1/models/guarded/partial-fit", json=batch)
        assert refused.status_code == 403, refused.text
        assert reader.get("/v1/models/guarded").json()["samples_seen"] == 0


def test_json_and_ndjson_streams_reach_both_replicas_bit_for_bit(stack: Stack) -> None:
    x_train, x_test, y_train, _ = digits_split()
    sent = batches(x_train[:960], y_train[:960], 64)
    with _client(stack) as client:
        assert client.post("/v1/models", json=_digits_model("digits")).status_code == 201
        for index, body in enumerate(sent[:10]):  # round-robin over both replicas
            answer = client.post("/v1/models/digits/partial-fit", json=body | {"batch_id": index})
            assert answer.status_code in (200, 202), answer.text
        lines = [body | {"batch_id": 10 + i} for i, body in enumerate(sent[10:])]
        streamed = client.post(
            "/v1/models/digits/partial-fit", content=ndjson(lines),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        assert streamed.status_code == 200, streamed.text
    version = _checkpoint(_trained(stack, "digits", 960), "digits")
    first, second = _answers(stack, "digits", x_test[:200].tolist(), version)
    assert first["version"] == second["version"] == version
    assert first == second
    assert len(_served(stack, "digits")) == 1


def test_gpu_override_resolves(stack: Stack) -> None:
    result = stack.run(
        "-f", str(stack.folder / "docker-compose.gpu.yml"), "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    api = json.loads(result.stdout)["services"]["api"]
    assert api["image"] == "gradual:cuda"
    assert api["build"]["args"]["TORCH"] == "cuda"
    (device,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["capabilities"]) == ("nvidia", ["gpu"])


def test_cuda_build_asks_pytorchs_cuda_index_for_the_torch_pin(images: dict[str, str]) -> None:
    """PyTorch's index is unreachable here: the CUDA build gets as far as asking it for the
    pinned torch, which shows the index URL and the pin it resolves; no CUDA wheel is fetched."""
    if _reachable("https://download.pytorch.org/whl/cu128/torch/"):
        pytest.skip("PyTorch's index is reachable: not downloading the CUDA wheels (~3 GB)")
    result = docker(
        "build", "--progress=plain", "--target", "build", "-f", "docker/Dockerfile",
        "--build-arg", f"PYTHON_IMAGE={images['STACK_PYTHON_IMAGE']}",
        "--build-arg", "TORCH=cuda", ".", timeout=600, check=False,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "https://download.pytorch.org/whl/cu128" in log
    assert "torch==2.13.0" in log


def _reachable(url: str) -> bool:
    try:
        httpx.head(url, timeout=5)
    except httpx.HTTPError:
        return False
    return True


# -- failures and restarts ------------------------------------------------------------------


class Streamer(threading.Thread):
    """Sends numbered batches through the balancer; a batch is resent (same batch_id) until
    a replica acknowledges it, as a client that sees a dropped connection does."""

    def __init__(self, stack: Stack, model: str, sent: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.stack, self.model, self.sent = stack, model, sent
        self.acknowledged: list[int] = []
        self.retries = 0

    def run(self) -> None:
        with _client(self.stack, "write") as client:
            for index, body in enumerate(self.sent):
                self._send(client, index, body)
                time.sleep(0.2)

    def _send(self, client: httpx.Client, index: int, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + TAKEOVER_WITHIN_S
        while time.monotonic() < deadline:
            try:
                answer = client.post(
                    f"/v1/models/{self.model}/partial-fit", json=body | {"batch_id": index}
                )
                if answer.status_code in (200, 202):
                    self.acknowledged.append(index)
                    return
            except httpx.TransportError:
                pass
            self.retries += 1
            time.sleep(0.5)


def test_scaling_up_while_a_client_streams_applies_every_batch_once(stack: Stack) -> None:
    x_train, x_test, y_train, _ = digits_split(seed=2)
    sent = batches(x_train[:768], y_train[:768], 32)
    with _client(stack) as client:
        assert client.post("/v1/models", json=_digits_model("scaled")).status_code == 201
    streamer = Streamer(stack, "scaled", sent)
    streamer.start()
    while len(streamer.acknowledged) < 4:
        time.sleep(0.05)
    stack.ok("up", "-d", "--scale", "api=3", "--wait", "--no-build", timeout=HEALTHY_WITHIN_S + 60)
    streamer.join(timeout=TAKEOVER_WITHIN_S * 2)
    assert streamer.acknowledged == list(range(len(sent)))
    version = _checkpoint(_trained(stack, "scaled", 768), "scaled")
    answers = _answers(stack, "scaled", x_test[:100].tolist(), version)
    assert len(answers) == 3
    assert answers[0] == answers[1] == answers[2]
    assert len(_served(stack, "scaled")) == 1


def test_killed_owner_mid_stream_loses_no_batch_and_stop_exits_zero(stack: Stack) -> None:
    x_train, x_test, y_train, _ = digits_split(seed=1)
    sent = batches(x_train[:1024], y_train[:1024], 32)
    with _client(stack) as client:
        assert client.post("/v1/models", json=_digits_model("killed")).status_code == 201
    owner = _owner(stack, "killed")
    streamer = Streamer(stack, "killed", sent)
    streamer.start()
    while len(streamer.acknowledged) < 8:
        time.sleep(0.05)
    docker("kill", "-s", "KILL", owner)
    streamer.join(timeout=TAKEOVER_WITHIN_S * 2)
    assert streamer.acknowledged == list(range(len(sent)))
    stack.ok("up", "-d", "--wait", "--no-build", timeout=HEALTHY_WITHIN_S + 60)  # back to two
    version = _checkpoint(_trained(stack, "killed", 1024), "killed")  # each batch once
    served = _served(stack, "killed")
    before = _answers(stack, "killed", x_test[:100].tolist(), version)
    _stop_and_check_exits(stack)
    stack.ok("up", "-d", "--wait", "--no-build", timeout=HEALTHY_WITHIN_S + 60)
    _trained(stack, "killed", 1024)
    assert _served(stack, "killed") == served
    assert _answers(stack, "killed", x_test[:100].tolist(), version) == before


def _stop_and_check_exits(stack: Stack) -> None:
    started = time.monotonic()
    stack.ok("stop", timeout=STOP_GRACE_S * 3)
    elapsed = time.monotonic() - started
    record(stop_to_exited_s=round(elapsed, 1))
    exits = {c["Name"]: (c["State"], c["ExitCode"]) for c in stack.containers()}
    assert all(exit == ("exited", 0) for exit in exits.values()), exits
    assert elapsed < STOP_GRACE_S


def test_backup_and_restore_as_documented_keep_versions_and_predictions(stack: Stack) -> None:
    x_test = digits_split()[1][:100].tolist()
    owner = _trained(stack, "digits", 960)  # trained by the JSON and NDJSON streams above
    version = _checkpoint(owner, "digits")
    versions = inside(owner, "GET", "/v1/models/digits/versions")[1]
    served, before = _served(stack, "digits"), _answers(stack, "digits", x_test, version)
    run_procedure(stack, "backup")
    assert (stack.home / "gradual.sql").stat().st_size > 0
    stack.ok("down", "-v", "--timeout", str(STOP_GRACE_S), timeout=180)
    run_procedure(stack, "restore")
    names = stack.names("api")
    assert len(names) == 2
    assert inside(names[0], "GET", "/v1/models/digits/versions")[1] == versions
    assert _served(stack, "digits") == served
    assert _answers(stack, "digits", x_test, version) == before[:2]  # all alike, bit for bit


def test_upgrade_to_a_second_image_migrates_first_and_loses_no_batch(stack: Stack) -> None:
    """An upgrade as docs/deploy.md describes it, with the new release as a second tag."""
    release = stack.home / "release"
    release.mkdir()
    (release / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL io.gradual.release=next\n")
    docker("build", "-t", NEXT_IMAGE, str(release))
    x_train, _, y_train, _ = digits_split(seed=3)
    sent = batches(x_train[:640], y_train[:640], 32)
    with _client(stack) as client:
        assert client.post("/v1/models", json=_digits_model("upgraded")).status_code == 201
    streamer = Streamer(stack, "upgraded", sent)
    streamer.start()
    while len(streamer.acknowledged) < 4:
        time.sleep(0.05)
    since = docker("system", "info", "--format", "{{json .SystemTime}}").stdout.strip('"\n')
    stack.env["STACK_IMAGE"] = NEXT_IMAGE
    stack.write()
    stack.ok("up", "-d", "--no-build", timeout=HEALTHY_WITHIN_S + 120)  # as documented
    _healthy(stack)  # the balancer may have failed checks while both replicas were replaced
    streamer.join(timeout=TAKEOVER_WITHIN_S * 2)
    assert streamer.acknowledged == list(range(len(sent)))
    _trained(stack, "upgraded", 640)  # every acknowledged batch, once
    (migrate,) = [c for c in stack.containers() if c["Service"] == "migrate"]
    replicas = stack.names("api")
    assert {c["Image"] for c in stack.containers() if c["Service"] in ("migrate", "api")} == {
        NEXT_IMAGE
    }
    finished = _inspect(migrate["Name"], "{{.State.FinishedAt}}")
    assert all(_inspect(name, "{{.State.StartedAt}}") > finished for name in replicas)
    assert _api_exit_codes(stack, since) == ["0", "0"]  # the old replicas, stopped gracefully


def _healthy(stack: Stack) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        running = [c for c in stack.containers() if c["State"] == "running"]
        if all(c["Health"] in ("", "healthy") for c in running):
            return
        time.sleep(1)
    raise AssertionError(f"not healthy: {stack.containers()}")


def _inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container).stdout.strip()


def _api_exit_codes(stack: Stack, since: str) -> list[str]:
    events = docker(
        "events", "--since", since, "--until", "0s", "--filter", "event=die",
        "--filter", f"label=com.docker.compose.project={stack.project}",
        "--filter", "label=com.docker.compose.service=api",
        "--format", "{{.Actor.Attributes.exitCode}}",
    )  # fmt: skip
    return sorted(events.stdout.split())
