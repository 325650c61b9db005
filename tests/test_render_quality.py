"""The render-quality governor of a streaming session: a step down (the edge search off, then smaller renders)
while the session drops frames for lack of time, a step back up after a calm spell that doubles when it had to
step down again soon after."""
import asyncio
import threading
import time

import numpy as np
import pytest

from gramcast.render_quality import QualityGovernor, QualityGovernorConfig, QualityStep, quality_steps
from gramcast.server.synthetic import ArrayVideoTrack
from gramcast.session import AvatarSession, SessionConfig


def test_two_drops_within_the_window_turn_the_search_off_and_calm_turns_it_back_on():
    g = QualityGovernor(1, QualityGovernorConfig(drops_to_step=2, window=50, calm_s=20.0, warmup_s=3.0), now=0.0)
    assert g.frame(0.0) is None
    assert g.dropped(0.5) is None and g.dropped(1.0) is None and g.level == 0    # starting up: not counted
    assert all(g.frame(t * 0.04) is None for t in range(100)) and g.level == 0
    assert g.dropped(4.0) is None and g.level == 0               # one drop is not a pattern
    assert all(g.frame(4.0 + t * 0.04) is None for t in range(1, 60))
    assert g.dropped(6.5) is None and g.level == 0               # the first one left the window
    assert g.dropped(6.6) == 1 and g.level == 1                  # two within 50 frames
    assert g.frame(26.5) is None and g.level == 1                # 19.9 s of calm
    assert g.frame(26.7) == 0 and g.level == 0                   # 20.1 s


def test_going_off_again_soon_after_coming_back_doubles_the_calm_up_to_a_cap():
    cfg = QualityGovernorConfig(drops_to_step=1, calm_s=10.0, max_calm_s=40.0, relapse_s=30.0, warmup_s=0.0)
    g = QualityGovernor(1, cfg, now=0.0)
    t = 0.0
    g.frame(t)
    calms = []
    for _ in range(4):
        assert g.dropped(t) == 1
        start = t
        while g.frame(t) is None:
            t += 0.5
        calms.append(t - start)
        t += 5.0                                                 # relapses 5 s after coming back
    assert calms == [10.0, 20.0, 40.0, 40.0]
    assert g.dropped(t) == 1
    t += 100.0
    assert g.frame(t) == 0                                       # a long calm: back on
    t += 60.0
    assert g.dropped(t) == 1                                     # a late drop is no relapse: still 40 s
    assert g.frame(t + 39.5) is None and g.frame(t + 40.0) == 0


def test_the_ladder_steps_down_one_level_per_pattern_of_drops_and_up_one_per_calm_spell():
    cfg = QualityGovernorConfig(drops_to_step=2, window=50, calm_s=10.0, warmup_s=0.0)
    g = QualityGovernor(3, cfg, now=0.0)
    g.frame(0.0)
    levels = [g.dropped(0.1 * k) for k in range(1, 11)]          # ten drops in a row
    assert [x for x in levels if x is not None] == [1, 2, 3] and g.level == 3   # no lower than the lowest
    ups = [(t, g.frame(t)) for t in (9.0, 11.0, 15.0, 21.1, 31.2, 41.3, 60.0)]
    # 10 s after the last drop, then a whole calm spell for each further step (not all at once)
    assert [u for u in ups if u[1] is not None] == [(11.0, 2), (21.1, 1), (31.2, 0)]
    assert QualityGovernor(0, cfg).dropped(5.0) is None
    with pytest.raises(ValueError):
        QualityGovernor(-1, cfg)


def test_the_levels_give_up_the_edge_search_first_then_resolution():
    assert quality_steps(True, (0.875, 0.75)) == [
        QualityStep(True, 1.0), QualityStep(False, 1.0), QualityStep(False, 0.875), QualityStep(False, 0.75)]
    assert quality_steps(False, (0.75,)) == [QualityStep(None, 1.0), QualityStep(None, 0.75)]
    assert quality_steps(False, ()) == [QualityStep(None, 1.0)]
    with pytest.raises(ValueError, match="largest first"):
        SessionConfig(resolution_steps=(0.5, 0.75))
    with pytest.raises(ValueError, match="resolution_steps"):
        SessionConfig(resolution_steps=(1.0,))


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
                            quality_governor=QualityGovernorConfig(warmup_s=0.3))
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


class ResolutionCostProcessor:
    """Work whose time grows with the render's area: longer than a 20 fps camera's interval at 256² and 224²,
    well under it at 192²."""

    def __init__(self):
        self.render_resolution = 256
        self.calls = []

    def process(self, rgb, timestamp):
        time.sleep(0.07 * (self.render_resolution / 256) ** 2)
        return rgb, {"face_found": True}

    def set_render_resolution(self, resolution):
        self.calls.append((resolution, threading.current_thread().name))
        self.render_resolution = resolution

    def set_avatar(self, avatar):
        pass


async def test_a_session_that_falls_behind_renders_smaller_until_it_keeps_up(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="gramcast.session")
    proc = ResolutionCostProcessor()
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 10, fps=20)
    config = SessionConfig(max_fps=30, edge_samples=0, avatar_resolution=256)   # no edge step: sizes only
    session = AvatarSession(object(), config, processor=proc, quality_governor=QualityGovernorConfig(warmup_s=0.3))
    out = session.attach(camera)
    start, late = time.monotonic(), 0
    while time.monotonic() - start < 4.0:
        await asyncio.wait_for(out.recv(), 2.0)
        late += time.monotonic() - start > 3.0
    await session.close()
    sizes = [c[0] for c in proc.calls]
    assert sizes[:2] == [224, 192] and sizes == sorted(sizes, reverse=True)   # 7/8, then 3/4 of 256
    assert all(c[1] != "MainThread" for c in proc.calls)
    stats = session.stats()
    assert stats["render_resolution"] == sizes[-1] and stats["quality_level"] == len(sizes)
    assert late >= 14                                   # the last second at the camera's 20 fps, or nearly
    assert "render quality down to level 1 of 3: 224 px" in caplog.text     # what the operator's log says


class MultiLayerCostProcessor(ResolutionCostProcessor):
    """As above, for an avatar whose renderer has no edge search to give up (a multi-layer one)."""

    can_search_edges = searches_edges = False

    def __init__(self):
        super().__init__()
        self.edge_calls = []

    def set_edge_samples(self, samples):
        self.edge_calls.append(samples)


async def test_a_multi_layer_avatar_s_session_skips_the_edge_step_and_renders_smaller_at_once():
    proc = MultiLayerCostProcessor()
    camera = ArrayVideoTrack([np.zeros((16, 16, 3), np.uint8)] * 10, fps=20)
    session = AvatarSession(object(), SessionConfig(max_fps=30, avatar_resolution=256), processor=proc,
                            quality_governor=QualityGovernorConfig(warmup_s=0.3))
    await _run(session, camera, 3.0)
    stats = session.stats()
    # levels: 0 full, 1 edges off, 2 = 224 px, ...: the first pattern of drops goes straight to 224 px
    assert [c[0] for c in proc.calls][:2] == [224, 192] and stats["quality_level"] >= 3
    assert stats["edge_search_offs"] == 0 and stats["edge_search"] == 0
