"""Which local addresses aiortc offers as ICE host candidates.

aioice never offers 127.0.0.1. On a machine whose only interface is loopback (a test sandbox, a
container without a network) that leaves no candidate at all, and tests must not send traffic to
any non-loopback address. ``set_host_addresses`` pins the list for the whole process.
"""
from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses
LOOPBACK = ["127.0.0.1"]


def set_host_addresses(addresses: list[str] | None) -> None:
    """Offer exactly ``addresses`` as host candidates; ``None`` restores aioice's own choice.

    An empty list means "aioice's choice, or 127.0.0.1 if that finds nothing".
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original
        return

    def pinned(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return _original(use_ipv4, use_ipv6) or list(LOOPBACK)

    aioice.ice.get_host_addresses = pinned
