"""The edge-search governor of a streaming session: off while the session drops frames for lack of time,
back on after a calm spell that doubles when it had to go again soon after."""
import asyncio
import threading
import time

import numpy as np

from gramcast.render_quality import EdgeGovernor, EdgeGovernorConfig
from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.session import AvatarSession, SessionConfig


def test_two_drops_within_the_window_turn_the_search_off_and_calm_turns_it_back_on():
    g = EdgeGovernor(EdgeGovernorConfig(drops_to_disable=2, window=50, calm_s=20.0, warmup_s=3.0), now=0.0)
    assert g.frame(0.0) is None
    assert g.dropped(0.5) is None and g.dropped(1.0) is None and g.on    # starting up: not counted
    assert all(g.frame(t * 0.04) is None for t in range(100)) and g.on
    assert g.dropped(4.0) is None and g.on                       # one drop is not a pattern
    assert all(g.frame(4.0 + t * 0.04) is None for t in range(1, 60))
    assert g.dropped(6.5) is None and g.on                       # the first one left the window
    assert g.dropped(6.6) is False and not g.on                  # two within 50 frames
    assert g.frame(26.5) is None and not g.on                    # 19.9 s of calm
    assert g.frame(26.7) is True and g.on                        # 20.1 s


def test_going_off_again_soon_after_coming_back_doubles_the_calm_up_to_a_cap():
    cfg = EdgeGovernorConfig(drops_to_disable=1, calm_s=10.0, max_calm_s=40.0, relapse_s=30.0, warmup_s=0.0)
    g = EdgeGovernor(cfg, now=0.0)
    t = 0.0
    g.frame(t)
    calms = []
    for _ in range(4):
        assert g.dropped(t) is False
        start = t
        while g.frame(t) is None:
            t += 0.5
        calms.append(t - start)
        t += 5.0                                                 # relapses 5 s after coming back
    assert calms == [10.0, 20.0, 40.0, 40.0]
    assert g.dropped(t) is False
    t += 100.0
    assert g.frame(t) is True                                    # a long calm: back on
    t += 60.0
    assert g.dropped(t) is False                                 # a late drop is no relapse: still 40 s
    assert g.frame(t + 39.5) is None and g.frame(t + 40.0) is True


class EdgeCostProcessor:
    """Work that takes longer than a camera interval while the edge search is on, and little without it."""

    def __init__(self, slow_s, fast_s):
        self.slow_s, self.fast_s = slow_s, fast_s
        self.edge_samples = None
        self.calls = []

    def process(self, rgb, timestamp):
        time.sleep(self.slow_s if self.edge_samples is None else self.fast_s)
        return rgb, {"face_found": True}

    def set_edge_samples(self, samples):
        self.calls.append((samples, threading.current_thread().name))
        self.edge_samples = samples

    def set_avatar(self, avatar):
        pass


async def _run(session, camera, seconds):
    out = session.attach(camera)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.wait_for(out.recv(), 2.0)
    await session.close()


async def test_a_session_that_falls_behind_turns_the_edge_search_off_in_its_render_thread():
    proc = EdgeCostProcessor(slow_s=0.06, fast_s=0.005)
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 10, fps=30)
    session = AvatarSession(object(), SessionConfig(max_fps=30), processor=proc,
                            edge_governor=EdgeGovernorConfig(warmup_s=0.3))
    await _run(session, camera, 2.0)
    assert [c[0] for c in proc.calls] == [0]                    # off once, not back within the calm
    assert proc.calls[0][1] != "MainThread"
    stats = session.stats()
    assert stats["edge_search"] == 0 and stats["edge_search_offs"] == 1
    dropped = stats["frames_dropped"]
    assert 2 <= dropped <= 14                   # the start-up ones and those that told it, then none


async def test_a_session_told_how_to_search_edges_keeps_it():
    proc = EdgeCostProcessor(slow_s=0.06, fast_s=0.005)
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 10, fps=30)
    session = AvatarSession(object(), SessionConfig(max_fps=30, edge_samples=12), processor=proc)
    await _run(session, camera, 1.5)
    stats = session.stats()
    assert proc.calls == [] and stats["frames_dropped"] > 10
    assert stats["edge_search"] == 1 and stats["edge_search_offs"] == 0


def test_session_stats_say_whether_the_renderer_searches_edges_which_a_multi_layer_avatar_never_does():
    import torch

    from gramcast.avatar import Avatar
    from gramcast.compositing import AvatarFrameProcessor

    for layers, searches in ((1, 1), (2, 0)):
        heights = torch.linspace(0.02, -0.05, layers)[:, None, None].expand(layers, 8, 8).contiguous()
        avatar = Avatar(heights, torch.ones(layers, 4, 8, 8), 0.14)
        proc = AvatarFrameProcessor(avatar, SessionConfig(device="cpu"), tracker=object())
        session = AvatarSession(avatar, SessionConfig(device="cpu"), processor=proc)
        assert proc.renderer.num_drawn_layers == layers
        assert session.stats()["edge_search"] == searches
        proc.set_edge_samples(0)
        assert session.stats()["edge_search"] == 0
        proc.set_edge_samples(None)
        assert session.stats()["edge_search"] == searches
