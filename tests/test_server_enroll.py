"""Selfies enrolled over signaling: one at a time across the server (an enrollment takes every core), a
participant that waits too long told to retry, and each selfie avatar its owner's alone: no one else can
join with it, the next selfie replaces it, leaving drops it; its .gca goes to its owner, who can send it
back in a later call instead of enrolling again."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.server.tokens import mint_token
from servers import running_server

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
        return _small_avatar(meta={"source": image.decode()})



@pytest.mark.parametrize("slots", [1, 2])
async def test_enrollments_run_at_most_so_many_at_once_and_all_finish(slots):
    enroll = SlowEnroll(0.3)
    async with running_server(SECRET, enroll_fn=enroll, max_concurrent_enrollments=slots) as (server, ws):
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


async def test_a_selfie_that_waits_too_long_is_told_to_retry_and_the_session_goes_on():
    enroll = SlowEnroll(1.0)
    async with running_server(SECRET, enroll_fn=enroll, enroll_wait_s=0.2) as (server, ws):
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


async def test_a_selfie_avatar_is_its_owners_alone_and_goes_with_it():
    async with running_server(SECRET, enroll_fn=SlowEnroll(0.0)) as (server, ws):
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



def _small_avatar(seed: int = 0, meta: dict | None = None):
    import torch

    from gramcast.avatar import Avatar

    gen = torch.Generator().manual_seed(seed)
    return Avatar(heights=torch.rand(1, 8, 8, generator=gen) * 0.01, textures=torch.rand(1, 4, 16, 16, generator=gen),
                  extent=0.14, meta={"method": "test", "seed": seed} if meta is None else meta)


async def test_a_participant_keeps_its_avatar_file_and_uses_it_again_without_a_selfie():
    """Enroll once: the server hands the new avatar's .gca to its owner, who sends it back in a later call."""
    import torch

    from gramcast.avatar.avatar import AvatarLimits

    calls = []

    def enroll(image: bytes, face: str = "only"):
        calls.append(image)
        return _small_avatar(len(calls))

    limits = AvatarLimits(max_texture_resolution=16)
    async with running_server(SECRET, enroll_fn=enroll, avatar_limits=limits) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as first:
            await first.enroll(b"selfie")
            kept = first.avatar_file
            enrolled = server.selfies[first.participant][1]
        assert kept is not None and len(calls) == 1
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r") as again:
            await again.publish(ArrayVideoTrack([np.full((48, 64, 3), 90, np.uint8)] * 4))
            name = await again.use_avatar(kept)
            mine = server.selfies[again.participant]
            assert mine[0] == name and len(calls) == 1            # no new enrollment
            assert torch.equal(mine[1].textures, enrolled.textures.half().float())
            assert mine[1].meta == enrolled.meta
            assert server.connections[again.participant].pipeline.avatar is mine[1]   # the session shows it
            # a damaged file, and one larger than the server takes, say so and change nothing
            for bad, words in ((kept[: len(kept) // 2], "truncated"),
                               (_big_avatar_bytes(), "larger than this server takes")):
                with pytest.raises(ServerError) as info:
                    await again.use_avatar(bad)
                assert info.value.code == "bad_avatar" and words in str(info.value) and "selfie" in str(info.value)
            assert server.selfies[again.participant] == mine
        async with GramcastClient(ws, mint_token(SECRET, "r", "v", enroll=False), "r") as viewer:
            with pytest.raises(ServerError) as info:
                await viewer.use_avatar(kept)
            assert info.value.code == "not_allowed"


def _big_avatar_bytes() -> bytes:
    import torch

    from gramcast.avatar import Avatar

    return Avatar(torch.zeros(1, 8, 8), torch.rand(1, 4, 32, 32), 0.14, {}).to_bytes()
