"""A server's capacity limits: a full room refuses the next participant, a server streaming its most
avatar sessions refuses the next camera with "server_full" while the others go on, and a freed place
is taken again."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.server.tokens import mint_token
from servers import running_server

SECRET = b"limits-test-secret-0123456789abc"


def camera():
    return ArrayVideoTrack([np.full((48, 64, 3), 120, np.uint8)] * 4)



async def test_a_full_room_refuses_the_next_participant():
    async with running_server(SECRET, max_participants_per_room=2) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r"), \
                   GramcastClient(ws, mint_token(SECRET, "r", "b"), "r"):
            with pytest.raises(ServerError) as info:
                async with GramcastClient(ws, mint_token(SECRET, "r", "c"), "r"):
                    pass
            assert info.value.code == "join_refused" and "full (2 participants)" in str(info.value)
            async with GramcastClient(ws, mint_token(SECRET, "other", "c"), "other"):
                pass   # other rooms are not affected


async def test_the_session_limit_refuses_the_next_camera_and_frees_with_a_leaver():
    async with running_server(SECRET, max_sessions=2) as (server, ws):
        a, b, c = (GramcastClient(ws, mint_token(SECRET, "r", n), "r") for n in "abc")
        for client in (a, b, c):
            await client.connect()
        await a.publish(camera())
        await b.publish(camera())
        with pytest.raises(ServerError) as info:
            await c.publish(camera())
        assert info.value.code == "server_full" and "2 avatars" in str(info.value)
        # the two sessions go on: c receives a's video
        video, _ = await c.subscribe(a.participant)
        await asyncio.wait_for(video.recv(), 15)
        await a.close()
        for _ in range(100):
            if a.participant not in server.connections:
                break
            await asyncio.sleep(0.05)
        c2 = GramcastClient(ws, mint_token(SECRET, "r", "c2"), "r")
        await c2.connect()
        await c2.publish(camera())           # a's place
        assert sum(conn.publish_pc is not None for conn in server.connections.values()) == 2
        for client in (b, c, c2):
            await client.close()


async def place_free_messages(client) -> int:
    """How many "place_free" messages ``client`` has received so far (drains its event queue)."""
    seen = 0
    while not client.events.empty():
        seen += client.events.get_nowait().type == "place_free"
    return seen


async def test_participants_a_full_server_turned_away_are_told_when_a_place_frees():
    async with running_server(SECRET, max_sessions=1) as (server, ws):
        a, b, c, d = (GramcastClient(ws, mint_token(SECRET, "r", n), "r") for n in "abcd")
        for client in (a, b, c, d):
            await client.connect()
        await a.publish(camera())
        for waiting in (b, c):
            with pytest.raises(ServerError, match="server_full"):
                await waiting.publish(camera())
        with pytest.raises(asyncio.TimeoutError):
            await b.wait_for_place(0.3)             # nothing has freed yet
        await a.close()
        await asyncio.gather(b.wait_for_place(10), c.wait_for_place(10))
        await asyncio.sleep(0.2)
        assert await place_free_messages(d) == 0      # d never asked to publish
        await b.publish(camera())                     # the first offer takes the place
        with pytest.raises(ServerError, match="server_full"):
            await c.publish(camera())                 # c waits again, and is told again when b stops
        with pytest.raises(asyncio.TimeoutError):
            await c.wait_for_place(0.3)
        await b.close()
        await c.wait_for_place(10)
        await c.publish(camera())
        assert await place_free_messages(d) == 0
        for client in (c, d):
            await client.close()


async def test_draining_ends_at_its_timeout_with_participants_still_in_calls():
    async with running_server(SECRET) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as a:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await server.drain(0.3)
            assert 0.3 <= loop.time() - t0 < 2.0 and server.draining
            assert server.rooms.participant_count() == 1 and a.participant in server.connections
            stopped = asyncio.Event()
            stopped.set()
            t0 = loop.time()
            await server.drain(30, interrupted=stopped)      # a second signal: no more waiting
            assert loop.time() - t0 < 1.0


async def test_a_watch_only_token_watches_and_a_no_selfie_token_publishes_without_selfies():
    async with running_server(SECRET, enroll_fn=lambda image, face="only": None) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "speaker"), "r") as speaker, \
                   GramcastClient(ws, mint_token(SECRET, "r", "viewer", publish=False, enroll=False), "r") as viewer, \
                   GramcastClient(ws, mint_token(SECRET, "r", "guest", enroll=False), "r") as guest:
            assert (viewer.may_publish, viewer.may_enroll) == (False, False)
            assert (guest.may_publish, guest.may_enroll) == (True, False)
            assert (speaker.may_publish, speaker.may_enroll) == (True, True)
            await speaker.publish(camera())
            with pytest.raises(ServerError) as info:
                await viewer.publish(camera())
            assert info.value.code == "not_allowed" and "watching" in str(info.value)
            for who in (viewer, guest):
                with pytest.raises(ServerError) as info:
                    await who.enroll(b"selfie")
                assert info.value.code == "not_allowed" and "selfie" in str(info.value)
            video, _ = await viewer.subscribe(speaker.participant)     # watching works
            await asyncio.wait_for(video.recv(), 15)
            await guest.publish(camera())                              # a no-selfie guest still publishes
            assert server.selfies == {}


async def test_connections_beyond_the_limit_are_turned_away_before_their_handshake():
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async with running_server(SECRET, max_connections=2) as (server, ws):
        idle = [await connect(ws), await connect(ws)]          # never join: held until join_timeout_s
        for _ in range(50):
            if len(server._open) == 2:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidStatus) as info:
            await connect(ws)
        assert info.value.response.status_code == 503
        await idle[0].close()
        for _ in range(100):
            if len(server._open) < 2:
                break
            await asyncio.sleep(0.02)
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as a:   # a freed place is taken
            assert a.participant
        await idle[1].close()
