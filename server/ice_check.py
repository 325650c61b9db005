"""Does each configured STUN/TURN server answer, and accept the credentials? (``gramcast ice-check``)

A misconfigured relay shows in a call only as video that never arrives. This asks every server of an
``IceServersConfig`` what a call would: a STUN server for this machine's address as the internet sees
it (a binding request), a TURN server for a relayed address with the credentials the server would hand
out (an allocation), and says what failed and what to check.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

from aioice import stun, turn
from aiortc.rtcicetransport import parse_stun_turn_uri

from gramcast.server.ice_servers import IceServersConfig

__all__ = ["IceServerCheck", "check_ice_servers"]

CHECK_PEER_NAME = "gramcast-ice-check"


@dataclass(frozen=True)
class IceServerCheck:
    url: str
    ok: bool
    #: What the server answered (the address it saw or relays at), or what went wrong and what to check.
    detail: str


class _Binding(asyncio.DatagramProtocol):
    """One STUN binding request, sent again every half second until its response arrives."""

    def __init__(self):
        self.request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        self.response: asyncio.Future = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.transaction_id == self.request.transaction_id and not self.response.done():
            self.response.set_result(message)

    def error_received(self, exc: Exception) -> None:
        if not self.response.done():
            self.response.set_exception(exc)


async def _reflexive_address(host: str, port: int) -> str:
    loop = asyncio.get_running_loop()
    transport, binding = await loop.create_datagram_endpoint(_Binding, remote_addr=(host, port))
    try:
        while not binding.response.done():
            transport.sendto(bytes(binding.request))
            await asyncio.wait([binding.response], timeout=0.5)
        message = binding.response.result()
    finally:
        transport.close()
    if message.message_class != stun.Class.RESPONSE or "XOR-MAPPED-ADDRESS" not in message.attributes:
        raise stun.TransactionFailed(message)
    seen_host, seen_port = message.attributes["XOR-MAPPED-ADDRESS"]
    return f"{seen_host}:{seen_port}"


async def _relayed_address(host: str, port: int, transport: str, secure: bool, username: str, password: str) -> str:
    tls = ssl.create_default_context() if secure else None
    relay, _ = await turn.create_turn_endpoint(asyncio.DatagramProtocol, server_addr=(host, port),
                                                username=username, password=password, ssl=tls,
                                                transport=transport)
    try:
        relayed_host, relayed_port = relay.get_extra_info("sockname")[:2]
        return f"{relayed_host}:{relayed_port}"
    finally:
        relay.close()


def _what_failed(exc: BaseException, turn_server: bool, timeout_s: float) -> str:
    if isinstance(exc, stun.TransactionFailed):
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no address in the answer"))
        if turn_server and code == 401:
            return (f"the server refused the credentials ({code} {reason}): check that --turn-secret is its "
                    "static-auth-secret (or --turn-username/--turn-password one of its users), that it runs "
                    "with use-auth-secret, and that this machine's clock is right (the credentials carry "
                    "their expiry)")
        return f"the server answered with an error ({code} {reason})"
    if isinstance(exc, (TimeoutError, stun.TransactionTimeout)):
        return (f"no answer within {timeout_s:g} s: check the host and port, that the server runs, and that "
                "firewalls let this traffic through (UDP, or TCP for ?transport=tcp and turns:)")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens at that address and port"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}): turns: needs a certificate this machine trusts for that host name"
    return f"{type(exc).__name__}: {exc}"


async def check_ice_servers(config: IceServersConfig, timeout_s: float = 5.0) -> list[IceServerCheck]:
    """One check per URL of ``config`` (all at once), in its order."""
    turn_credentials = next((s for s in config.servers_for(CHECK_PEER_NAME) if "username" in s), {})

    async def check(url: str) -> IceServerCheck:
        parsed = parse_stun_turn_uri(url)
        is_turn = parsed["scheme"] in ("turn", "turns")
        try:
            async with asyncio.timeout(timeout_s):
                if is_turn:
                    relayed = await _relayed_address(parsed["host"], parsed["port"], parsed["transport"],
                                                     parsed["scheme"] == "turns", turn_credentials["username"],
                                                     turn_credentials["credential"])
                    return IceServerCheck(url, True, f"relays at {relayed}")
                seen = await _reflexive_address(parsed["host"], parsed["port"])
                return IceServerCheck(url, True, f"sees this machine as {seen}")
        except Exception as exc:  # noqa: BLE001 (every failure, a timeout too, is a finding to report)
            return IceServerCheck(url, False, _what_failed(exc, is_turn, timeout_s))

    return list(await asyncio.gather(*(check(u) for u in config.urls)))
