"""The gRPC server: a `grpc.aio` server on the app's own event loop, started and stopped by the
lifespan. Torch work leaves the loop as it does for HTTP (the hub's predict batcher)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from grpc import aio

from service.config import Settings
from service.oip.grpc.service import InferenceService, handler
from service.runtime.hub import ModelHub

log = logging.getLogger("gradual.grpc")

STOP_GRACE_S = 5.0


async def start(
    hub: ModelHub, settings: Settings, *, loaded: Callable[[], bool], version: str
) -> tuple[aio.Server, int]:
    """Serves `inference.GRPCInferenceService` on `settings.host`:`settings.grpc_port`; returns
    the server and its port (the one chosen when the setting is 0)."""
    server = aio.server(
        options=[
            # The HTTP body limit bounds a request here too; answers are not bounded.
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    service = InferenceService(hub, settings, loaded=loaded, version=version)
    server.add_generic_rpc_handlers((handler(service, settings),))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    await server.start()
    log.info("gRPC inference service on %s:%d", host, port)
    return server, port


async def stop(server: aio.Server) -> None:
    """Lets calls in flight finish (a few seconds at most), then closes."""
    await server.stop(STOP_GRACE_S)
