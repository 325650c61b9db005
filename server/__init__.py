"""gramcast.server: the WebRTC server (signaling, rooms, avatar tracks, the web client).

    from gramcast.server import GramcastServer, ServerConfig, IceServersConfig, mint_token

    server = GramcastServer({"me": gramcast.Avatar.load("me.gca")},
                            ServerConfig(host="0.0.0.0", ice_servers=IceServersConfig(urls=("stun:stun.example.org",))))
    await server.start()                                    # then server.run_until_signal(), or your own loop
    token = mint_token(server.secret, "standup", "Ada")     # what your app's backend hands its user

The names load on first use (aiortc and websockets come with them), so ``import gramcast.server`` costs nothing.
"""
from __future__ import annotations

import importlib

#: name -> the module that defines it
_EXPORTS = {
    "GramcastServer": "gramcast.server.app", "ServerConfig": "gramcast.server.config",
    "IceServersConfig": "gramcast.server.ice_servers", "GramcastClient": "gramcast.server.client",
    "ServerError": "gramcast.server.client", "mint_token": "gramcast.server.tokens",
    "verify_token": "gramcast.server.tokens", "RoomGrant": "gramcast.server.tokens",
    "TokenError": "gramcast.server.tokens",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gramcast.server' has no attribute {name!r}")
