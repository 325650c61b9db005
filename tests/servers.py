"""A gramcast server on 127.0.0.1 for the tests, with the pass-through video pipeline unless told otherwise."""
from __future__ import annotations

from contextlib import asynccontextmanager


@asynccontextmanager
async def running_server(secret: bytes, avatars: dict | None = None, **config):
    """Start a ``GramcastServer`` (``config``: ``ServerConfig`` fields) and yield ``(server, websocket URL)``;
    it is stopped however the block ends."""
    from gramcast.server.app import GramcastServer, ServerConfig
    from gramcast.server.synthetic import PassThroughPipeline

    config.setdefault("pipeline_factory", PassThroughPipeline)
    config.setdefault("ice_addresses", ["127.0.0.1"])
    server = GramcastServer(avatars or {"default": object()}, ServerConfig(port=0, secret=secret, **config))
    await server.start()
    try:
        scheme = "wss" if server.config.tls_cert is not None else "ws"
        yield server, f"{scheme}://127.0.0.1:{server.config.port}/ws"
    finally:
        await server.stop()
