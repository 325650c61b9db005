"""The server's signaling, rooms and media relay over real WebRTC on localhost.

The avatar pipeline here is a pass-through (camera frames go out unchanged), so these tests check
the server's plumbing on its own; tests/test_stream_e2e.py runs the real avatar pipeline.
"""
import asyncio

import msgpack
import numpy as np
import pytest

from gramcast.server import protocol
from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import ArrayVideoTrack, PassThroughPipeline, SineAudioTrack, audio_rms
from gramcast.server.tokens import mint_token

SECRET = b"rooms-test-secret-0123456789-012"


def colour_frames(rgb, n=4, size=64):
    return [np.full((size, size, 3), rgb, np.uint8) for _ in range(n)]


@pytest.fixture
async def server():
    cfg = ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"], pipeline_factory=PassThroughPipeline,
                       join_timeout_s=5.0)
    srv = GramcastServer({"default": object()}, cfg)
    await srv.start()
    yield srv
    await srv.stop()


def ws_url(srv):
    return f"ws://127.0.0.1:{srv.config.port}/ws"


def client(srv, name, room="room1", **kw):
    return GramcastClient(ws_url(srv), mint_token(SECRET, room, name), room, **kw)


async def recv_mean_colour(track, n=3, timeout=10.0):
    means = []
    for _ in range(n):
        frame = await asyncio.wait_for(track.recv(), timeout)
        means.append(frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(0))
    return np.mean(means, axis=0)


async def test_two_participants_receive_each_other_and_audio(server):
    async with client(server, "ann") as a, client(server, "bob") as b:
        await a.publish(ArrayVideoTrack(colour_frames((200, 30, 30))), SineAudioTrack())
        await b.publish(ArrayVideoTrack(colour_frames((30, 30, 200))), SineAudioTrack())
        video_ab, audio_ab = await a.subscribe(await a.wait_for_peer())
        video_ba, _ = await b.subscribe(await b.wait_for_peer())
        ca, cb = await recv_mean_colour(video_ab), await recv_mean_colour(video_ba)
        assert ca[2] > 150 and ca[0] < 80   # ann sees bob (blue)
        assert cb[0] > 150 and cb[2] < 80   # bob sees ann (red)
        levels = [audio_rms(await asyncio.wait_for(audio_ab.recv(), 10)) for _ in range(30)]
        assert max(levels) > 1000  # the tone arrives, not silence


async def test_third_joins_and_leaves_and_a_killed_peer_is_cleaned_up(server):
    async with client(server, "ann") as a, client(server, "bob") as b:
        await a.publish(ArrayVideoTrack(colour_frames((10, 200, 10))))
        await b.publish(ArrayVideoTrack(colour_frames((200, 200, 10))))
        c = client(server, "cat")
        await c.connect()
        await c.publish(ArrayVideoTrack(colour_frames((10, 10, 10))))
        assert server.rooms.participant_count() == 3
        video_ac, _ = await a.subscribe(c.participant)
        await recv_mean_colour(video_ac, n=1)
        # cat vanishes without a goodbye: its websocket and peer connections just drop.
        await c.ws.close()
        for pc in c.pcs.values():
            await pc.close()
        for _ in range(100):
            if server.rooms.participant_count() == 2 and c.participant not in a.peers:
                break
            await asyncio.sleep(0.05)
        assert server.rooms.participant_count() == 2
        assert c.participant not in a.peers and c.participant not in b.peers
        assert c.participant not in server.connections
        # The others still see each other.
        video_ab, _ = await a.subscribe(b.participant)
        assert (await recv_mean_colour(video_ab))[1] > 150


async def test_bad_tokens_are_refused(server):
    bad = GramcastClient(ws_url(server), mint_token(SECRET, "other-room", "eve"), "room1")
    with pytest.raises(ServerError, match="join_refused"):
        await bad.connect()
    await bad.close()
    forged = GramcastClient(ws_url(server), mint_token(b"x" * 32, "room1", "eve"), "room1")
    with pytest.raises(ServerError, match="signature"):
        await forged.connect()
    await forged.close()
    assert server.rooms.participant_count() == 0


async def test_fuzzed_signaling_leaves_server_and_other_sessions_alive(server):
    from websockets.asyncio.client import connect

    async with client(server, "ann") as a, client(server, "bob") as b:
        await a.publish(ArrayVideoTrack(colour_frames((250, 250, 250))))
        video, _ = await b.subscribe(await b.wait_for_peer())
        rng = np.random.default_rng(7)
        sent = 0
        for round_ in range(6):
            async with connect(ws_url(server), max_size=None, close_timeout=1) as ws:
                for i in range(400):
                    kind = i % 5
                    if kind == 0:
                        data = rng.bytes(int(rng.integers(0, 200)))
                    elif kind == 1:
                        data = msgpack.packb({"v": 1, "type": str(rng.choice(["offer", "ice", "join", "x"])),
                                              "sdp": "garbage", "sdp_type": "offer", "token": "t", "room": 1})
                    elif kind == 2:
                        data = msgpack.packb({"v": 1, "type": "offer", "sdp": "v=0\r\nnonsense", "sdp_type": "offer"})
                    elif kind == 3:
                        data = "text frame"
                    else:
                        data = b"\x81" + b"\xff" * 50
                    try:
                        await ws.send(data)
                    except Exception:
                        break
                    sent += 1
            # the same bytes after a valid join, where handlers really run
            async with client(server, f"fuzz{round_}") as f:
                for i in range(50):
                    await f.ws.send(msgpack.packb({"v": 1, "type": "offer", "sdp": "v=0\r\nbad",
                                                   "sdp_type": "offer", "target": "nobody"}))
                    await f.ws.send(msgpack.packb({"v": 1, "type": "ice", "candidate": "candidate:garbage"}))
                await f.send("stats")
                sent += 100
        assert sent > 2000
        # ann's stream still reaches bob, and the server still accepts new participants.
        assert (await recv_mean_colour(video, n=2))[0] > 200
        async with client(server, "late") as late:
            assert late.participant
        for _ in range(100):
            if server.rooms.participant_count() == 2:
                break
            await asyncio.sleep(0.05)
        assert server.rooms.participant_count() == 2


async def test_static_page_and_unknown_paths(server):
    import urllib.request

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.config.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    loop = asyncio.get_running_loop()
    status, body = await loop.run_in_executor(None, get, "/?room=a&token=b")
    assert status == 200 and b"app.js" in body
    status, body = await loop.run_in_executor(None, get, "/vendor/msgpack-3.1.3.min.js")
    assert status == 200 and b"MessagePack" in body
    status, _ = await loop.run_in_executor(None, get, "/../../etc/passwd")
    assert status == 404
    status, _ = await loop.run_in_executor(None, get, "/nope.js")
    assert status == 404


async def test_join_timeout_closes_idle_connections():
    from websockets.asyncio.client import connect

    cfg = ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"], pipeline_factory=PassThroughPipeline,
                       join_timeout_s=0.3)
    srv = GramcastServer({"default": object()}, cfg)
    await srv.start()
    try:
        async with connect(ws_url(srv)) as ws:
            msg = protocol.decode(await asyncio.wait_for(ws.recv(), 5), protocol.SERVER_MESSAGES)
            assert msg.type == "error" and msg["code"] == "join_timeout" and msg["fatal"]
    finally:
        await srv.stop()


async def test_frame_stamps_survive_the_codec_and_give_latency(server):
    from gramcast.server.synthetic import read_stamp, stamp_frame

    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (240, 320, 3), dtype=np.uint8)
    frames = [stamp_frame(base, i) for i in range(90)]
    async with client(server, "ann") as a, client(server, "bob") as b:
        cam = ArrayVideoTrack(frames, fps=30)
        await a.publish(cam)
        video, _ = await b.subscribe(await b.wait_for_peer())
        seen = []
        for _ in range(20):
            frame = await asyncio.wait_for(video.recv(), 10)
            counter = read_stamp(frame.to_ndarray(format="rgb24"))
            assert counter is not None and 0 <= counter < cam.index
            seen.append(counter)
        assert seen == sorted(seen) and len(set(seen)) >= 15


async def test_many_peers_vanishing_at_once_are_all_cleaned_up(server):
    created = []
    make = server.new_peer_connection
    server.new_peer_connection = lambda: created.append(make()) or created[-1]
    clients = [client(server, f"c{i}") for i in range(5)]
    for c in clients:
        await c.connect()
        await c.publish(ArrayVideoTrack(colour_frames((100, 100, 100))))
    for a in clients:  # a full mesh, so each departure has subscriptions to tear down elsewhere
        for b in clients:
            if a is not b:
                await a.subscribe(b.participant)
    await asyncio.gather(*(c.ws.close() for c in clients))  # all drop at the same moment
    for c in clients:
        for pc in c.pcs.values():
            await pc.close()
    for _ in range(100):
        if not server.connections and all(pc.connectionState == "closed" for pc in created):
            break
        await asyncio.sleep(0.05)
    assert server.rooms.participant_count() == 0 and not server.connections
    assert created and all(pc.connectionState == "closed" for pc in created)
