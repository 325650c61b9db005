"""The counters and rates an ``AvatarSession`` reports (``session.stats()``)."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["SessionStats", "ewma"]


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self.times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()

    def rate(self, now: float) -> float:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        return len(self.times) / self.window_s


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    #: Frames whose tracking or rendering raised (logged, at most a line every 10 s; the session goes on).
    frames_failed: int = 0
    faces_lost: int = 0
    tracking_ms: float = 0.0
    render_ms: float = 0.0
    compose_ms: float = 0.0
    #: Frames that placed the previous render again (the head had not moved enough to show;
    #: ``SessionConfig.reuse_render_px``); render_ms averages the frames that rendered.
    renders_reused: int = 0
    #: Frames whose head pose was the last tracked frame's, the face having held still (``TrackerConfig.still_px``);
    #: tracking_ms averages the frames that ran the face mesh.
    tracks_still: int = 0
    encode_ms: float = 0.0
    #: Camera frame received -> its avatar frame handed to the sender (+ last encode time).
    latency_ms: float = 0.0
    #: Whether the renderer searches occlusion edges now (1) or not (0; ``SessionConfig.edge_samples``), and
    #: how often a session that fell behind turned it off.
    edge_search: int = 1
    edge_search_offs: int = 0
    #: The session's render quality now: 0 = full, higher = stepped down while it fell behind
    #: (``gramcast.render_quality``), and the avatar render's side at that level.
    quality_level: int = 0
    render_resolution: int = 0
    _in_rate: _Rate = field(default_factory=_Rate, repr=False)
    _out_rate: _Rate = field(default_factory=_Rate, repr=False)

    def as_dict(self) -> dict[str, float]:
        now = time.monotonic()
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["input_fps"] = self._in_rate.rate(now)
        d["output_fps"] = self._out_rate.rate(now)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def ewma(old: float, new: float, k: float = 0.2) -> float:
    """Exponentially weighted moving average; the first value (old 0.0) is taken as it is."""
    return new if old == 0.0 else (1 - k) * old + k * new
