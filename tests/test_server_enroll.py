"""Selfies enrolled over signaling: one at a time across the server (an enrollment takes every core), a
participant that waits too long told to retry, and each selfie avatar its owner's alone: no one else can
join with it, the next selfie replaces it, leaving drops it."""
from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import PassThroughPipeline
from gramcast.server.tokens import mint_token

SECRET = b"enroll-test-secret-0123456789abc"


class SlowEnroll:
    """An enrollment that takes ``seconds`` and records how many ran at once."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.running = self.most = self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, image: bytes, face: str = "only"):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return SimpleNamespace(meta={"source": image.decode()})


async def start(enroll, **cfg):
    server = GramcastServer({"default": object()}, ServerConfig(port=0, secret=SECRET, enroll_fn=enroll,
                                                                pipeline_factory=PassThroughPipeline, **cfg))
    await server.start()
    return server, f"ws://127.0.0.1:{server.config.port}/ws"


@pytest.mark.parametrize("slots", [1, 2])
async def test_enrollments_run_at_most_so_many_at_once_and_all_finish(slots):
    enroll = SlowEnroll(0.3)
    server, ws = await start(enroll, max_concurrent_enrollments=slots)
    try:
        clients = [GramcastClient(ws, mint_token(SECRET, "r", f"c{i}"), "r") for i in range(4)]
        for c in clients:
            await c.connect()
        names = await asyncio.gather(*(c.enroll(f"selfie {i}".encode()) for i, c in enumerate(clients)))
        assert enroll.calls == 4 and enroll.most == slots
        for i, (c, name) in enumerate(zip(clients, names)):
            assert server.selfies[c.participant][0] == name
            assert server.selfies[c.participant][1].meta["source"] == f"selfie {i}"
        for c in clients:
            await c.close()
    finally:
        await server.stop()


async def test_a_selfie_that_waits_too_long_is_told_to_retry_and_the_session_goes_on():
    enroll = SlowEnroll(1.0)
    server, ws = await start(enroll, enroll_wait_s=0.2)
    try:
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as a, \
                   GramcastClient(ws, mint_token(SECRET, "r", "b"), "r") as b:
            first = asyncio.ensure_future(a.enroll(b"a"))
            await asyncio.sleep(0.1)
            with pytest.raises(ServerError) as info:
                await b.enroll(b"b")
            assert info.value.code == "enroll_busy" and "again" in str(info.value)
            name = await first
            assert server.selfies[a.participant][0] == name
            assert await b.enroll(b"b again")            # once free, it goes through
            assert enroll.calls == 2
    finally:
        await server.stop()


async def test_a_selfie_avatar_is_its_owners_alone_and_goes_with_it():
    server, ws = await start(SlowEnroll(0.0))
    try:
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as a:
            first = await a.enroll(b"one")
            # someone else naming it gets what any unknown avatar gets
            with pytest.raises(ServerError) as info:
                async with GramcastClient(ws, mint_token(SECRET, "r", "b"), "r", avatar=first):
                    pass
            assert info.value.code == "unknown_avatar"
            second = await a.enroll(b"two")
            assert second != first and list(server.selfies) == [a.participant]
            assert server.selfies[a.participant][1].meta["source"] == "two"
        for _ in range(100):
            if not server.selfies:
                break
            await asyncio.sleep(0.05)
        assert server.selfies == {}
        assert "default" in server.avatars and len(server.avatars) == 1
    finally:
        await server.stop()

