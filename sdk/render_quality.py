"""How much render quality a streaming session can afford: steps down while it falls behind, back up when calm.

A session that drops camera frames because it is still busy with earlier ones is short of cores. What it can
give up, in order (``quality_steps``):

1. the renderer's occlusion-edge search (``RenderSettings.edge_samples``): it makes a turned ``mesh`` avatar's
   edges smooth and costs ~1.5 ms a frame at 256² on a CPU; one session on 2 cores keeps the camera's 25
   frames/s with it, two no longer do (24.1 frames/s, glass-to-glass 51 against 28 ms; README);
2. then render resolution (``SessionConfig.resolution_steps``: 7/8, 6/8, 5/8 of ``avatar_resolution``): the
   render is placed scaled to the head's size in the frame either way, so it comes out softer, not smaller. A
   24-layer avatar renders in ~2/3 of the time at 3/4 the size and ~1/2 at 5/8: one such session on 2 cores
   streamed at 24.6 frames/s (at 5/8) where it had 17.7 at full size (bench/stream.py --compare-resolution).
   A multi-layer avatar's renderer never searches edges: its session skips step 1.

``QualityGovernor`` keeps the level: one step down once ``drops_to_step`` of the last ``window`` camera frames
were dropped for lack of time, one step back up after a calm spell that doubles (to a cap) each time the
session had to step down again soon after stepping up (a machine that cannot afford a level stops trying
it). Frames dropped by the frame-rate cap say nothing about load and are not reported to it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["QualityGovernorConfig", "QualityGovernor", "QualityStep", "quality_steps", "QualityLadder"]


@dataclass(frozen=True)
class QualityGovernorConfig:
    #: One step down once this many of the last ``window`` camera frames were dropped for lack of time.
    drops_to_step: int = 2
    window: int = 50
    #: Seconds without such drops before one step back up; doubled (up to ``max_calm_s``) each time the session
    #: has to step down again within ``relapse_s`` of stepping up.
    calm_s: float = 20.0
    max_calm_s: float = 320.0
    relapse_s: float = 30.0
    #: Drops in the first seconds after the first frame are the session starting up (models loading,
    #: first renders), not a machine short of cores: not counted.
    warmup_s: float = 3.0


@dataclass(frozen=True)
class QualityStep:
    """What a session renders at one level: whether the edge search is on (None: as configured) and at what
    fraction of ``SessionConfig.avatar_resolution``."""

    edge_search: bool | None = None
    resolution_scale: float = 1.0


def quality_steps(edges_governed: bool, resolution_steps: tuple[float, ...]) -> list[QualityStep]:
    """The levels from full quality (0) down: the edge search off first where the session governs it, then each
    of ``resolution_steps`` (fractions of the avatar resolution, largest first) with the search off."""
    full = QualityStep(edge_search=True if edges_governed else None)
    steps = [full]
    if edges_governed:
        steps.append(QualityStep(edge_search=False))
    off = False if edges_governed else None
    steps += [QualityStep(edge_search=off, resolution_scale=float(s)) for s in resolution_steps]
    return steps


class QualityGovernor:
    """Feed it every camera frame the session takes or drops for lack of time; ``level`` (0 = full quality,
    up to ``lowest``) is what the session should render at. ``frame``/``dropped`` return the new level when it
    changes, else None."""

    def __init__(self, lowest: int, config: QualityGovernorConfig = QualityGovernorConfig(), now: float = 0.0):
        if lowest < 0:
            raise ValueError(f"lowest must be 0 or more levels, not {lowest}")
        self.config = config
        self.lowest = lowest
        self.level = 0
        self._recent: deque[bool] = deque(maxlen=config.window)   # True: dropped
        self._calm_s = config.calm_s
        self._last_drop = now
        self._raised_at: float | None = None
        self._first_frame: float | None = None

    def dropped(self, now: float) -> int | None:
        if self._first_frame is None or now - self._first_frame < self.config.warmup_s:
            return None
        self._recent.append(True)
        self._last_drop = now
        if self.level < self.lowest and sum(self._recent) >= self.config.drops_to_step:
            self.level += 1
            if self._raised_at is not None and now - self._raised_at < self.config.relapse_s:
                self._calm_s = min(2 * self._calm_s, self.config.max_calm_s)
            self._recent.clear()
            return self.level
        return None

    def step_down(self) -> int:
        """One more step down at once (the level just taken gave up nothing); returns the level."""
        self.level = min(self.level + 1, self.lowest)
        return self.level

    def frame(self, now: float) -> int | None:
        if self._first_frame is None:
            self._first_frame = now
        self._recent.append(False)
        if self.level > 0 and now - self._last_drop >= self._calm_s:
            self.level -= 1
            self._raised_at = now
            self._last_drop = now          # the next step up waits a whole calm spell again
            self._recent.clear()
            return self.level
        return None


class QualityLadder:
    """A session's levels of render quality (``quality_steps``) and the governor that picks one. ``frame`` and
    ``dropped`` return the step to render at from the next frame on where it changes, else None."""

    def __init__(self, steps: list[QualityStep], avatar_resolution: int,
                 config: QualityGovernorConfig = QualityGovernorConfig(), now: float = 0.0):
        self.steps = steps
        self.avatar_resolution = int(avatar_resolution)
        self._governor = QualityGovernor(len(steps) - 1, config, now)

    @property
    def level(self) -> int:
        return self._governor.level

    @property
    def step(self) -> QualityStep:
        return self.steps[self.level]

    def frame(self, now: float) -> QualityStep | None:
        level = self._governor.frame(now)
        return None if level is None else self.steps[level]

    def dropped(self, now: float, can_search_edges: bool = True) -> QualityStep | None:
        """A frame dropped for lack of time. ``can_search_edges`` False (a multi-layer avatar's renderer): a step
        that would only turn off the edge search gives up nothing, so the ladder goes one further at once."""
        before = self.level
        level = self._governor.dropped(now)
        if level is None:
            return None
        if (not can_search_edges and level < len(self.steps) - 1
                and self.steps[level].resolution_scale == self.steps[before].resolution_scale):
            level = self._governor.step_down()
        return self.steps[level]

    def resolution(self, step: QualityStep) -> int:
        """The render size of ``step``: a multiple of 8 (whole cells of the renderer's 1/4-resolution search)."""
        res = self.avatar_resolution
        return res if step.resolution_scale >= 1.0 else max(16, int(round(res * step.resolution_scale / 8.0)) * 8)
