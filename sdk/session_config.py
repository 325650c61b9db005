"""``SessionConfig``: how an ``AvatarSession``'s avatar video looks and how fast it may go."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gramcast.checks import is_whole

__all__ = ["OUTPUT_PRESETS", "BACKGROUNDS", "SessionConfig", "check_output_format", "check_output_size",
           "check_resolution_steps"]

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
        """Refuses, with what is allowed, a value a session could not use (it would fail every frame)."""
        from gramcast.errors import InvalidArgumentError as Bad

        check_output_format(self.output_format)
        self.output_size = check_output_size(self.output_size, self.output_format)
        if not (is_whole(self.avatar_resolution) and 16 <= self.avatar_resolution <= 4096):
            raise Bad(f"avatar_resolution must be a whole number of pixels from 16 to 4096, not {self.avatar_resolution!r}")
        if self.background not in BACKGROUNDS:
            raise Bad(f"background must be one of {BACKGROUNDS}, not {self.background!r}")
        if self.background == "image":
            image = self.background_image
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4)
                    and min(image.shape[:2]) > 0):
                raise Bad("background 'image' needs background_image, an (H, W, 3) or (H, W, 4) uint8 RGB array")
        colour = self.background_color
        if not (isinstance(colour, (tuple, list)) and len(colour) == 3
                and all(is_whole(c) and 0 <= c <= 255 for c in colour)):
            raise Bad(f"background_color must be three whole numbers 0..255 (R, G, B), not {colour!r}")
        if isinstance(self.max_fps, bool) or not isinstance(self.max_fps, (int, float)) \
                or not 0.0 <= self.max_fps < float("inf"):
            raise Bad(f"max_fps must be a frame rate in frames per second (0: no cap), not {self.max_fps!r}")
        if self.backend not in ("torch", "onnx"):
            raise Bad(f"backend must be 'torch' or 'onnx', not {self.backend!r}")
        for name in ("edge_samples", "passthrough_rows"):
            value = getattr(self, name)
            if value is None and name == "edge_samples":
                continue
            if not is_whole(value) or value < 0:
                raise Bad(f"{name} must be a whole number, 0 or more, not {value!r}")
        if self.pipeline is not None and not isinstance(self.pipeline, bool):
            raise Bad(f"pipeline must be None (on with a GPU), True or False, not {self.pipeline!r}")
        if self.trace is not None and not callable(self.trace):
            raise Bad(f"trace must be None or a callable trace(event, image, time), not {self.trace!r}")
        self.resolution_steps = check_resolution_steps(self.resolution_steps)
        if not self.still_px >= 0.0:
            raise Bad(f"still_px must be 0 (track every frame) or more pixels, not {self.still_px}")
        if not self.reuse_render_px >= 0.0:
            raise Bad("reuse_render_px must be 0 (render every frame) or more pixels, "
                      f"not {self.reuse_render_px}")
        from gramcast.device import available_device
        from gramcast.errors import GramcastError

        if self.device != "auto":
            try:
                available_device(self.device)
            except GramcastError as exc:
                raise Bad(f"device {exc}") from None

    def size_for(self, camera_wh: tuple[int, int]) -> tuple[int, int]:
        """The output frame's (width, height) for a camera frame of ``camera_wh``: the configured size, or
        the camera's own, made even for yuv420p (4:2:0 halves both sides; H264 encoders refuse odd sizes)."""
        if self.output_size is None:
            w, h = (int(x) for x in camera_wh)
            if self.output_format == "yuv420p":
                w, h = max(2, w - w % 2), max(2, h - h % 2)
            return w, h
        if isinstance(self.output_size, str):
            return OUTPUT_PRESETS[self.output_size]
        w, h = self.output_size
        return int(w), int(h)


#: ``SessionConfig.background`` values.
BACKGROUNDS = ("color", "blur", "image")


def check_output_size(size, pixel_format: str = "yuv420p"):
    """``SessionConfig.output_size`` as stored: None, a preset name, or (width, height) ints; a "640x360"
    string becomes (640, 360). Refused (``InvalidArgumentError``, a ValueError): other names, sizes outside
    16..4096, and odd sides for yuv420p output."""
    from gramcast.errors import InvalidArgumentError

    if size is None or (isinstance(size, str) and size in OUTPUT_PRESETS):
        return size
    if isinstance(size, str):
        w, sep, h = size.strip().lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise InvalidArgumentError(f"output_size {size!r}: use one of {', '.join(OUTPUT_PRESETS)}, "
                                       "'WIDTHxHEIGHT' or (width, height), or None for the camera's own size")
        size = (int(w), int(h))
    try:
        w, h = size
        ok = is_whole(w) and is_whole(h)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise InvalidArgumentError(f"output_size {size!r}: give (width, height) in whole pixels from 16 to 4096, "
                                   f"a preset ({', '.join(OUTPUT_PRESETS)}) or None for the camera's own size")
    if pixel_format == "yuv420p" and (w % 2 or h % 2):
        raise InvalidArgumentError(f"output_size {w}x{h}: yuv420p frames need an even width and height "
                                   "(H264 encoders refuse odd ones)")
    return int(w), int(h)


def check_output_format(pixel_format: str) -> None:
    from gramcast.errors import InvalidArgumentError

    if pixel_format not in ("yuv420p", "rgb24"):
        raise InvalidArgumentError(f"output_format must be 'yuv420p' or 'rgb24', not {pixel_format!r}")


def check_resolution_steps(steps) -> tuple[float, ...]:
    """``SessionConfig.resolution_steps`` as a tuple of floats, or a ValueError: fractions in [0.1, 1), largest
    first."""
    fractions = tuple(float(x) for x in steps)
    if any(not 0.1 <= x < 1.0 for x in fractions) or list(fractions) != sorted(fractions, reverse=True):
        from gramcast.errors import InvalidArgumentError

        raise InvalidArgumentError(f"resolution_steps must be fractions in [0.1, 1), largest first, not {steps}")
    return fractions
