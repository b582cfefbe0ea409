"""A 100 MB body is refused with a 413 by a real server without being read whole.

The body comes from a generator that counts what the client was asked for: the server must
answer while most of it is still unsent, with `Content-Length` declared (refused from the
header, before reading) and without it (chunked: refused as soon as the limit is passed).
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from service.config import Settings
from tests.factories import model_body
from tests.live_server import serving

TOTAL = 100 * 1024 * 1024
CHUNK = 64 * 1024
LIMIT = 1024 * 1024


def chunks(*, framed: bool) -> Iterator[bytes]:
    """100 MB of JSON rows in 64 KiB pieces (HTTP/1.1 chunk framing when `framed`)."""
    piece = b"[1.0, 2.0, 3.0, 4.0], " * (CHUNK // 22)
    for _ in range(TOTAL // len(piece)):
        yield b"%x\r\n%s\r\n" % (len(piece), piece) if framed else piece


def send_until_answered(url: str, *, declared: bool) -> tuple[int, int, dict[str, Any]]:
    """Sends the body until the server answers; returns (bytes sent, status, JSON body)."""
    address = httpx.URL(url)
    length = f"content-length: {TOTAL}" if declared else "transfer-encoding: chunked"
    head = (
        f"POST {address.path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\n{length}\r\n\r\n"
    )
    sent = 0
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for piece in chunks(framed=not declared):
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending, as a client reading it would
            try:
                sock.sendall(piece)
            except OSError:
                break  # the server closed the connection after answering
            sent += len(piece)
        answer = _read_answer(sock)
    status = int(answer.split(b" ", 2)[1])
    return sent, status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"}" not in answer.rpartition(b"\r\n\r\n")[2]:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    return answer


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_without_being_read_whole(
    make_settings: Callable[..., Settings], declared: bool
) -> None:
    with serving(make_settings(max_body_bytes=LIMIT)) as base:
        assert httpx.post(f"{base}/v1/models", json=model_body("m"), timeout=30).status_code == 201
        sent, status, body = send_until_answered(
            f"{base}/v1/models/m/partial-fit", declared=declared
        )
        assert (status, body["code"]) == (413, "body_too_large")
        # answered long before the end: the server never took in (nor held) 100 MB
        assert sent < 16 * LIMIT, f"{sent / 2**20:.1f} MiB were sent before the answer"
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200  # and it still answers
