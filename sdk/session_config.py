"""``SessionConfig``: how an ``AvatarSession``'s avatar video looks and how fast it may go."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["OUTPUT_PRESETS", "SessionConfig", "check_output_format", "check_resolution_steps"]

#: Output sizes (width, height) WebRTC apps commonly negotiate, plus square ones.
OUTPUT_PRESETS: dict[str, tuple[int, int]] = {
    "180p": (320, 180), "240p": (320, 240), "360p": (640, 360), "480p": (640, 480),
    "540p": (960, 540), "720p": (1280, 720),
    "square256": (256, 256), "square512": (512, 512),
}


@dataclass
class SessionConfig:
    """How the avatar video looks and how fast it may go."""

    #: A preset name from OUTPUT_PRESETS or (width, height); None = the camera's own size.
    output_size: str | tuple[int, int] | None = "480p"
    #: Side of the square avatar render before it is placed in the frame.
    avatar_resolution: int = 256
    #: "color" (a flat colour), "blur" (the blurred camera frame) or "image".
    background: str = "color"
    background_color: tuple[int, int, int] = (24, 24, 28)
    background_image: np.ndarray | None = None
    #: Frames per second the output never exceeds (camera frames beyond it are dropped).
    max_fps: float = 30.0
    #: Torch device or "auto" for the renderer; "onnx" backend where installed.
    device: str = "auto"
    backend: str = "torch"
    #: The renderer's full-resolution search along occlusion edges (``RenderSettings.edge_samples``).
    #: None: the renderer's default (on for one-layer ``mesh`` avatars) while the session keeps up, off
    #: while it drops camera frames for lack of time (``gramcast.render_quality.QualityGovernor``; on a CPU it
    #: costs ~1.5 ms a frame at 256², and two sessions on 2 cores did not hold 25 frames/s with it).
    #: 0 = always off; N = always N samples.
    edge_samples: int | None = None
    #: Place the last render again, instead of rendering anew, while no point of the avatar can have moved
    #: more than this many pixels of the render since (``gramcast.render_reuse``): a still head's tracked pose
    #: wanders by fractions of a pixel from frame to frame. At 0.5 a still head reused 83-87 % of its renders,
    #: whose frames were then off by 0.06-0.10 levels on average (bench/render_reuse.py). 0 = render every frame.
    reuse_render_px: float = 0.5
    #: A camera frame in which the face's box moved less than this many camera pixels since the last tracked
    #: frame keeps that frame's pose without running the face mesh, at most 3 frames in a row
    #: (``TrackerConfig.still_px``, ``gramcast.face.stillness``). 0 = track every frame.
    still_px: float = 0.25
    #: Fractions of ``avatar_resolution`` the session renders at, one step further each time it keeps dropping
    #: camera frames for lack of time (after turning the edge search off, where it governs that), and back
    #: after calm spells (``gramcast.render_quality``): the render is placed at the head's size either way, so a
    #: loaded machine's avatar comes out softer rather than late. () = always ``avatar_resolution``. The
    #: ``onnx`` backend keeps its size (it exports a model per size, which takes seconds).
    resolution_steps: tuple[float, ...] = (0.875, 0.75, 0.625)
    #: Copy this many top rows of the camera frame into the output (0 = off). For measuring
    #: glass-to-glass latency with frame counters stamped into the camera (bench/stream.py).
    passthrough_rows: int = 0
    #: Track the next camera frame while the current one renders (two worker threads); else one
    #: thread tracks and renders each frame in turn. None: on when the renderer runs on a GPU. On
    #: a CPU the render already takes every core, so the overlap gains nothing there and costs
    #: latency (2 cores, 24-layer avatar: 19.1 vs 18.8 frames/s, 124 vs 69 ms; README).
    #: Processors with only ``process`` always run in one thread.
    pipeline: bool | None = None
    #: Pixel format of the output frames: "yuv420p" (what the video encoders take; odd sizes fall
    #: back to rgb24) or "rgb24" (for applications that read the frames themselves).
    output_format: str = "yuv420p"
    #: Per-frame tracing for latency breakdowns (bench/stream.py --hops): called as
    #: ``trace(event, image, monotonic_time)`` from the event loop and the worker thread, with the
    #: camera frame, its RGB array or the output frame as ``image``. None (the default) = off.
    trace: Callable[[str, Any, float], None] | None = None

    def __post_init__(self):
        check_output_format(self.output_format)
        self.resolution_steps = check_resolution_steps(self.resolution_steps)
        if not self.still_px >= 0.0:
            raise ValueError(f"still_px must be 0 (track every frame) or more pixels, not {self.still_px}")
        if not self.reuse_render_px >= 0.0:
            raise ValueError("reuse_render_px must be 0 (render every frame) or more pixels, "
                             f"not {self.reuse_render_px}")

    def size_for(self, camera_wh: tuple[int, int]) -> tuple[int, int]:
        if self.output_size is None:
            return camera_wh
        if isinstance(self.output_size, str):
            try:
                return OUTPUT_PRESETS[self.output_size]
            except KeyError:
                raise ValueError(f"unknown output size {self.output_size!r}; "
                                 f"presets: {sorted(OUTPUT_PRESETS)}") from None
        w, h = self.output_size
        return int(w), int(h)


def check_output_format(pixel_format: str) -> None:
    if pixel_format not in ("yuv420p", "rgb24"):
        raise ValueError(f"output_format must be 'yuv420p' or 'rgb24', not {pixel_format!r}")


def check_resolution_steps(steps) -> tuple[float, ...]:
    """``SessionConfig.resolution_steps`` as a tuple of floats, or a ValueError: fractions in [0.1, 1), largest
    first."""
    fractions = tuple(float(x) for x in steps)
    if any(not 0.1 <= x < 1.0 for x in fractions) or list(fractions) != sorted(fractions, reverse=True):
        raise ValueError(f"resolution_steps must be fractions in [0.1, 1), largest first, not {steps}")
    return fractions
