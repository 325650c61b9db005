"""Clients that break the protocol, over real websockets and peer connections: each gets an error that
says what was wrong, the server logs it, and nothing it started is left holding a place (a refused offer
frees its --max-sessions slot), before a join a connection may send only small messages and has a
deadline, and a draining or stopping server tells its clients to come back rather than refusing them."""
from __future__ import annotations

import asyncio
import logging

import msgpack
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gramcast.server import protocol
from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.server.tokens import mint_token
from servers import running_server

SECRET = b"bad-clients-test-secret-0123456789"


def camera():
    return ArrayVideoTrack([np.full((48, 64, 3), 120, np.uint8)] * 4)


def frame(kind: str, **fields) -> bytes:
    return msgpack.packb({"v": protocol.PROTOCOL_VERSION, "type": kind, **fields}, use_bin_type=True)


async def reply(ws, timeout: float = 10.0) -> dict:
    """The next message to ``ws`` that is not news of the room (``peer``)."""
    while True:
        msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), timeout), raw=False)
        if msg["type"] != "peer":
            return msg


async def joined(ws_url: str, name: str):
    """A raw websocket that has joined room "r" as ``name``."""
    ws = await connect(ws_url, max_size=None)
    await ws.send(frame("join", token=mint_token(SECRET, "r", name), room="r"))
    assert (await reply(ws))["type"] == "joined"
    return ws


async def real_offer() -> str:
    """The SDP offer of an aiortc peer connection sending a camera (ICE gathered)."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(camera(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


async def test_offers_aiortc_cannot_connect_get_bad_sdp_and_free_their_slot(caplog):
    good = await real_offer()
    bad = {"no media sections": "v=0\r\nnot sdp\r\n",
           "no DTLS fingerprint": without(good, "a=fingerprint"),
           "no ICE credentials": without(without(good, "a=ice-ufrag"), "a=ice-pwd"),
           "no codec in common": good.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000"),
           "": good[: len(good) // 3]}         # truncated: whatever it lacks first
    caplog.set_level(logging.INFO, logger="gramcast.server.signaling")
    async with running_server(SECRET, max_sessions=1) as (server, ws_url):
        ws = await joined(ws_url, "a")
        try:
            for what, sdp in bad.items():
                await ws.send(frame("offer", sdp=sdp, sdp_type="offer"))
                err = await reply(ws)
                assert (err["type"], err["code"], err["fatal"]) == ("error", "bad_sdp", False), (what, err)
                assert what in err["message"] and "Error" not in err["message"], (what, err)
            assert all(c.publish_pc is None for c in server.connections.values())
            assert sum("bad_sdp" in r.getMessage() for r in caplog.records) == len(bad)
            # the slot is free: another participant publishes, and this one is told the server is full
            # (not that it already publishes)
            async with GramcastClient(ws_url, mint_token(SECRET, "r", "b"), "r") as b:
                await b.publish(camera())
                await ws.send(frame("offer", sdp=good, sdp_type="offer"))
                assert (await reply(ws))["code"] == "server_full"
            for _ in range(100):
                if not any(c.publish_pc is not None for c in server.connections.values()):
                    break
                await asyncio.sleep(0.05)
            await ws.send(frame("offer", sdp=good, sdp_type="offer"))
            assert (await reply(ws))["type"] == "answer"                     # and its own retry is taken
        finally:
            await ws.close()


async def test_unusable_ice_candidates_are_bad_fields_and_the_connection_goes_on():
    async with running_server(SECRET) as (server, ws_url):
        async with GramcastClient(ws_url, mint_token(SECRET, "r", "a"), "r") as a:
            await a.publish(camera())
            good = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"
            for fields, says in ((dict(candidate="candidate:garbage", sdp_mid="0"), "unparseable"),
                                 (dict(candidate=good), "sdp_mid")):
                await a.send("ice", **fields)
                for _ in range(50):
                    if a.errors:
                        break
                    await asyncio.sleep(0.05)
                err = a.errors.pop()
                assert err.code == "bad_field" and says in str(err)
            await a.send("ice", candidate=good, sdp_mid="0")                 # a good one is taken silently
            assert isinstance(await a.request_stats(), dict) and not a.errors


async def test_before_joining_only_small_messages_and_a_deadline_however_many_bad_ones():
    async with running_server(SECRET, join_timeout_s=1.0) as (server, ws_url):
        async with connect(ws_url, max_size=None) as ws:
            await ws.send(b"\xc1 not msgpack")
            assert (await reply(ws))["code"] == "bad_msgpack"
            await ws.send(frame("stats"))
            assert (await reply(ws))["code"] == "not_joined"
            err = await reply(ws, timeout=5.0)                  # the deadline counts from the connection
            assert (err["code"], err["fatal"]) == ("join_timeout", True)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with connect(ws_url, max_size=None) as ws:
            await ws.send(b"\x00" * (protocol.MAX_SIGNALING_BYTES + 4096))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1009               # message too big, unread
        ws = await joined(ws_url, "a")
        try:
            await ws.send(frame("avatar", file=b"\x00" * (2 * protocol.MAX_SIGNALING_BYTES)))
            assert (await reply(ws))["code"] == "bad_avatar"    # read and answered once joined
        finally:
            await ws.close()


async def test_a_draining_server_turns_joins_away_for_later_and_tells_the_last_ones_it_stops():
    async with running_server(SECRET) as (server, ws_url):
        ws = await joined(ws_url, "a")
        server.draining = True
        async with connect(ws_url, max_size=None) as late:
            await late.send(frame("join", token=mint_token(SECRET, "r", "late"), room="r"))
            err = await reply(late)
            assert (err["code"], err["fatal"]) == ("draining", False) and "join again" in err["message"]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(late.recv(), 5)
            assert closed.value.rcvd.code == 1013               # try again later
        await server.stop()
        err = await reply(ws)
        assert (err["code"], err["fatal"]) == ("shutting_down", False)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1001                   # going away


async def test_a_client_whose_camera_is_refused_may_publish_once_the_server_has_room():
    async with running_server(SECRET, max_sessions=1) as (server, ws_url):
        async with GramcastClient(ws_url, mint_token(SECRET, "r", "a"), "r") as a, \
                   GramcastClient(ws_url, mint_token(SECRET, "r", "b"), "r") as b:
            await a.publish(camera())
            with pytest.raises(ServerError, match="server_full"):
                await b.publish(camera())
            await a.close()
            for _ in range(100):
                if a.participant not in server.connections:
                    break
                await asyncio.sleep(0.05)
            await b.publish(camera())        # the client forgot its refused connection
            assert sum(c.publish_pc is not None for c in server.connections.values()) == 1
