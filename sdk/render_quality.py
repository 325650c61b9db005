"""When a session may afford the renderer's occlusion-edge search (``RenderSettings.edge_samples``).

The search makes a turned ``mesh`` avatar's edges smooth and costs ~1.5 ms a frame at 256² on a CPU: one
session on 2 cores keeps the camera's 25 frames/s with it, two no longer do (24.1 frames/s, glass-to-glass
51 against 28 ms; README). A session that drops camera frames because it is still busy with earlier ones
is short of cores, so the governor turns the search off there, and back on after a calm spell that
doubles each time the search had to go again soon after (a machine that cannot afford it stops trying).
Frames dropped by the frame-rate cap say nothing about load and are not reported to it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["EdgeGovernorConfig", "EdgeGovernor"]


@dataclass(frozen=True)
class EdgeGovernorConfig:
    #: Off once this many of the last ``window`` camera frames were dropped for lack of time.
    drops_to_disable: int = 2
    window: int = 50
    #: Seconds without such drops before the search is tried again; doubled (up to ``max_calm_s``) each time
    #: it has to go again within ``relapse_s`` of coming back.
    calm_s: float = 20.0
    max_calm_s: float = 320.0
    relapse_s: float = 30.0
    #: Drops in the first seconds after the first frame are the session starting up (models loading,
    #: first renders), not a machine short of cores: not counted.
    warmup_s: float = 3.0


class EdgeGovernor:
    """Feed it every camera frame the session takes or drops for lack of time; ``on`` says whether the
    renderer should search occlusion edges. ``frame``/``dropped`` return the new state when it changes,
    else None."""

    def __init__(self, config: EdgeGovernorConfig = EdgeGovernorConfig(), now: float = 0.0):
        self.config = config
        self.on = True
        self._recent: deque[bool] = deque(maxlen=config.window)   # True: dropped
        self._calm_s = config.calm_s
        self._last_drop = now
        self._back_on_at: float | None = None
        self._first_frame: float | None = None

    def dropped(self, now: float) -> bool | None:
        if self._first_frame is None or now - self._first_frame < self.config.warmup_s:
            return None
        self._recent.append(True)
        self._last_drop = now
        if self.on and sum(self._recent) >= self.config.drops_to_disable:
            self.on = False
            if self._back_on_at is not None and now - self._back_on_at < self.config.relapse_s:
                self._calm_s = min(2 * self._calm_s, self.config.max_calm_s)
            self._recent.clear()
            return False
        return None

    def frame(self, now: float) -> bool | None:
        if self._first_frame is None:
            self._first_frame = now
        self._recent.append(False)
        if not self.on and now - self._last_drop >= self._calm_s:
            self.on = True
            self._back_on_at = now
            self._recent.clear()
            return True
        return None
