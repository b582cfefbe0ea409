"""Server processes for the benchmarks: Gradual itself and the bench's own stand-ins, each on
a free loopback port, logging to a file (never a pipe that could fill), and sent SIGTERM when
the benchmark process dies."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import Options

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process on loopback; its output goes to a log file, never to a pipe."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ready_path: str
    also_ready: Callable[[], bool] | None = None  # polled once `ready_path` answers

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server process (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process and every live descendant (the
        readers of `gradual serve --workers N`, TorchServe's Java frontend and its Python
        worker), all threads."""
        table = _processes()
        tree = {self.pid}
        grown = True
        while grown:
            found = {pid for pid, (parent, _, _) in table.items() if parent in tree}
            grown = not found <= tree
            tree |= found
        ticks = sum(table[pid][1] for pid in tree if pid in table)
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    if self.also_ready is None or self.also_ready():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout} s")


@contextmanager
def server(
    name: str, command: Sequence[str], env: dict[str, str], ready: str, port: int,
    meanwhile: Callable[[], object] | None = None, wait: bool = True, *,
    also_ready: Callable[[], bool] | None = None, group: bool = False,
) -> Iterator[Server]:  # fmt: skip
    """Starts the process, runs `meanwhile` (warm-ups) while it boots, and unless `wait` is
    off (the caller waits later, so that several servers boot at once) waits until ready.
    `group`: the process leads a process group of its own, and the whole group is stopped."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, start_new_session=group,
            )  # fmt: skip
        running = Server(name, port, process, log, ready, also_ready)
        try:
            if meanwhile is not None:
                meanwhile()
            if wait:
                running.wait_ready()
            yield running
        finally:
            if group:
                stop_group(process.pid)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stop_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM to a process group, SIGKILL to whatever of it is left after `timeout`."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sent)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        if not _group_alive(pgid):
            return


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is left (zombies aside)."""
    return any(group == pgid for _, _, group in _processes().values())


def _processes() -> dict[int, tuple[int, int, int]]:
    """Every live process (zombies aside): pid → (parent pid, CPU ticks, process group)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            ticks = int(fields[11]) + int(fields[12])
            table[int(stat.parent.name)] = (int(fields[1]), ticks, int(fields[2]))
    return table


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, so a killed run leaves no server."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # Linux; libc is loaded already


def _gradual_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("gradual")
    if script.exists():
        return [str(script), "serve", "--port", str(port)]
    found = shutil.which("gradual")
    if found:
        return [found, "serve", "--port", str(port)]
    return [sys.executable, "-m", "service", "serve", "--port", str(port)]


@contextmanager
def gradual(
    opts: Options, *, env: dict[str, str] | None = None,
    meanwhile: Callable[[], object] | None = None, checkout: str | None = None,
    name: str = "gradual", wait: bool = True, extra: Sequence[str] = (),
) -> Iterator[Server]:  # fmt: skip
    """`gradual serve` with its data in a fresh temporary directory and one torch thread;
    `checkout`: the service's code from another tree (e.g. main's, for a before/after)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-gradual-data-") as data:
        settings = {"GRADUAL_DATA_DIR": data, "GRADUAL_TORCH_THREADS": "1", "GRADUAL_DEVICE": "cpu"}
        settings["GRADUAL_WORKERS"] = "1"  # one process unless `env` asks for more
        # Not the tree the `gradual` script came from.
        settings["PYTHONPATH"] = _this_checkout(checkout)
        if opts.log_level:
            settings["GRADUAL_LOG_LEVEL"] = opts.log_level
        settings |= opts.server_env | (env or {})
        command = [*_gradual_command(port), *extra]
        with server(name, command, settings, "/readyz", port, meanwhile, wait) as running:
            yield running


def _this_checkout(checkout: str | None = None) -> str:
    root = checkout or str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))


@contextmanager
def module_server(
    name: str, module: str, args: Sequence[str] = (), *, wait: bool = True
) -> Iterator[Server]:
    """`python -m <module> --port P <args>`: one of the bench's own servers."""
    port = free_port()
    command = [sys.executable, "-m", module, "--port", str(port), *args]
    env = {"PYTHONPATH": _this_checkout()}
    with server(name, command, env, "/readyz", port, wait=wait) as running:
        yield running


def naive(hidden: Sequence[int], *, wait: bool = True) -> AbstractContextManager[Server]:
    """The naive FastAPI endpoint of bench/naive_server.py, in its own process."""
    shape = ",".join(map(str, hidden))
    return module_server("naive", "bench.naive_server", ["--hidden", shape], wait=wait)


def handlers(
    kind: str, hidden: Sequence[int], *, wait: bool = True
) -> AbstractContextManager[Server]:
    """The lean or naive hand-written server of bench/handlers_server.py, in its own process."""
    shape = ",".join(map(str, hidden))
    args = ["--kind", kind, "--hidden", shape]
    return module_server(kind, "bench.handlers_server", args, wait=wait)
