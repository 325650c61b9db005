"""What an operator sees of a running server through a real call: GET /metrics and /healthz (live gauges
follow the call, counters only grow: a session's frames stay counted after it ends, errors and refused joins
are counted by code, no room or participant name appears) and the log lines of joins, cameras and leaves."""
from __future__ import annotations

import asyncio
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient
from gramcast.server.synthetic import ArrayVideoTrack, PassThroughPipeline, SineAudioTrack
from gramcast.server.tokens import mint_token

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"metrics-test-secret-0123456789ab"


async def get(url: str) -> tuple[int, str, str]:
    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()
    return await asyncio.to_thread(fetch)


async def scrape(server) -> dict[tuple, float]:
    status, ctype, text = await get(server.url + "metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def until(server, check, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        m = await scrape(server)
        if check(m):
            return m
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"metrics never got there: {m}")
        await asyncio.sleep(0.2)


def avatar_session(avatar):
    from gramcast.session import AvatarSession, SessionConfig

    return AvatarSession(avatar, SessionConfig(output_size=(320, 240), avatar_resolution=128, max_fps=15))


async def test_metrics_and_log_follow_a_call_and_its_end(caplog):
    caplog.set_level(logging.INFO, logger="gramcast.server")
    import gramcast

    avatar = gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png")
    server = GramcastServer({"sample": avatar}, ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"],
                                                             pipeline_factory=avatar_session, metrics=True))
    await server.start()
    ws = f"ws://127.0.0.1:{server.config.port}/ws"
    try:
        assert await get(server.url + "healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        m = await scrape(server)
        assert m[("gramcast_participants", ())] == 0 and m[("gramcast_sessions", ())] == 0
        assert m[("gramcast_info", (("version", "0.1.0"),))] == 1
        camera = [np.full((240, 320, 3), 90, np.uint8)] * 8
        async with GramcastClient(ws, mint_token(SECRET, "secret-room", "Alice Example"), "secret-room") as a:
            async with GramcastClient(ws, mint_token(SECRET, "secret-room", "Bob"), "secret-room") as b:
                await a.publish(ArrayVideoTrack(camera), SineAudioTrack())
                video, _ = await b.subscribe(await b.wait_for_peer())
                for _ in range(3):
                    await asyncio.wait_for(video.recv(), 15)
                live = await until(server, lambda m: m[("gramcast_session_frames_out_total", ())] >= 10)
                session = (("participant", a.participant),)
                assert live[("gramcast_participants", ())] == 2 and live[("gramcast_rooms", ())] == 1
                assert live[("gramcast_sessions", ())] == 1 and live[("gramcast_subscriptions", ())] == 1
                assert live[("gramcast_joins_total", (("result", "accepted"),))] == 2
                assert live[("gramcast_session_output_fps", session)] > 0
                assert live[("gramcast_session_render_resolution_pixels", session)] == 128
                assert 0 < live[("gramcast_session_latency_seconds", session)] < 5
                # the camera shows no face: the session has lost it (the avatar holds its pose)
                assert live[("gramcast_session_faces_lost_total", ())] > 0
                # a bad message and a bad token, counted by their error codes
                await b.ws.send(b"\xc1 not msgpack")
                async with connect(ws) as intruder:
                    import msgpack

                    await intruder.send(msgpack.packb({"v": 1, "type": "join", "token": "forged", "room": "x"}))
                    await intruder.recv()
                m = await until(server, lambda m: m.get(("gramcast_signaling_errors_total",
                                                         (("code", "bad_msgpack"),))) == 1)
                assert m[("gramcast_signaling_errors_total", (("code", "join_refused"),))] == 1
                assert m[("gramcast_joins_total", (("result", "refused"),))] == 1
                _, _, text = await get(server.url + "metrics")
                assert "secret-room" not in text and "Alice" not in text and "Bob" not in text
        after = await until(server, lambda m: m[("gramcast_sessions", ())] == 0
                            and m[("gramcast_participants", ())] == 0)
        # the ended session's frames are still counted, and no series of it is left
        assert after[("gramcast_sessions_ended_total", ())] == 1
        for key in ("gramcast_session_frames_in_total", "gramcast_session_frames_out_total"):
            assert after[(key, ())] >= live[(key, ())]
        assert not [k for k in after if ("participant", a.participant) in k[1]]
        lines = [r.getMessage() for r in caplog.records if r.name == "gramcast.server.signaling"]
        me = [line for line in lines if line.startswith(a.participant)]
        assert me[0].startswith(f"{a.participant} joined room 'secret-room' as 'Alice Example' from 127.0.0.1:")
        assert me[1] == f"{a.participant} publishes its camera (avatar 'sample')"
        left = re.fullmatch(rf"{a.participant} left room 'secret-room' after [\d.]+ s: (\d+) camera frames, (\d+) avatar "
                            r"frames sent, \d+ dropped, (\d+) times the face was lost", me[-1])
        assert left and int(left[1]) >= live[("gramcast_session_frames_in_total", ())] and int(left[3]) >= 1
        assert any(line.startswith("join refused from 127.0.0.1:") for line in lines)
    finally:
        await server.stop()


async def test_metrics_are_off_unless_asked_for_health_is_always_on():
    server = GramcastServer({"default": object()}, ServerConfig(port=0, secret=SECRET,
                                                                pipeline_factory=PassThroughPipeline))
    await server.start()
    try:
        assert (await get(server.url + "metrics"))[0] == 404
        assert (await get(server.url + "healthz"))[0] == 200
    finally:
        await server.stop()
