"""AvatarSession: a participant's camera track in, their avatar's video track out.

Usable from any aiortc application::

    session = AvatarSession(avatar)                 # or AvatarSession(avatar, SessionConfig(...))
    pc.addTrack(session.attach(remote_camera_track))
    ...
    print(session.stats())
    await session.close()

Per camera frame the session tracks the head, renders the avatar at that pose and places it in the
output frame (``gramcast.compositing``), as a yuv420p frame ready for the encoder. The work runs in
worker threads, never on the event loop; with a GPU renderer, as a two-stage pipeline: while one
frame renders, the next one is tracked (``SessionConfig.pipeline``), so a frame costs the longer of
the two stages rather than their sum. When the pipeline is full, newer
camera frames are dropped rather than queued, so latency stays flat when rendering falls behind:
only the newest one waits, in a single slot, and starts if the tracker frees up within half a
camera frame interval (so a render that runs a little long costs no frame, and waiting adds at
most half an interval); at most one tracked frame waits for the renderer. The output keeps the
camera frames' timestamps, so audio relayed from the same participant stays in sync.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gramcast.frame_processor import FrameProcessor, TrackedFrame, TwoStageFrameProcessor, as_two_stage, is_two_stage
from gramcast.render_quality import QualityGovernor, QualityGovernorConfig, QualityStep, quality_steps
from gramcast.session_stats import SessionStats, ewma

log = logging.getLogger(__name__)

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
        _check_output_format(self.output_format)
        steps = tuple(float(x) for x in self.resolution_steps)
        if any(not 0.1 <= x < 1.0 for x in steps) or list(steps) != sorted(steps, reverse=True):
            raise ValueError("resolution_steps must be fractions in [0.1, 1), largest first, "
                             f"not {self.resolution_steps}")
        self.resolution_steps = steps
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
                raise ValueError(f"unknown output size {self.output_size!r}; presets: {sorted(OUTPUT_PRESETS)}") from None
        w, h = self.output_size
        return int(w), int(h)


class AvatarSession:
    """Renders ``avatar`` at the head pose tracked in an incoming aiortc video track.

    ``executor`` (one thread) runs the renders; without one the session makes its own. Tracking
    runs in a thread of the session's own when the pipeline is on. ``quality_governor``: when the session steps
    its render quality down and back up (the edge search where ``SessionConfig.edge_samples`` is None, then
    ``SessionConfig.resolution_steps``; ``gramcast.render_quality``)."""

    def __init__(self, avatar, config: SessionConfig | None = None,
                 processor: FrameProcessor | None = None,
                 executor: concurrent.futures.Executor | None = None,
                 quality_governor: QualityGovernorConfig | None = None):
        self.config = config or SessionConfig()
        self.avatar = avatar
        self._processor = processor
        self._made_for = avatar      # the avatar the processor renders
        self._pipelined = _pipeline_on(self.config) and (processor is None or is_two_stage(processor))
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gramcast-render")
        self._track_executor = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gramcast-track")
                                if self._pipelined else None)
        self._processor_ready: concurrent.futures.Future | None = None
        self._stats = SessionStats()
        self._input = None
        self._output = None
        self._task: asyncio.Task | None = None
        self._latest = None
        self._tracking = False   # the first stage (or, unpipelined, the only one) has a frame
        self._rendering = False
        self._waiting = None     # (camera frame, arrival time): the newest frame waiting for the tracker
        self._tracked: TrackedFrame | None = None   # a tracked frame waiting for the renderer
        self._camera_interval = 0.0  # seconds between camera frames (EWMA of their timestamps)
        self._new_frame = asyncio.Event()
        self._ended = False
        self._face_found = True
        # the levels of render quality the session steps through while it drops frames (None: just the one)
        self._steps = quality_steps(self.config.edge_samples is None,
                                    self.config.resolution_steps if self.config.backend == "torch" else ())
        self._quality = (QualityGovernor(len(self._steps) - 1, quality_governor or QualityGovernorConfig(),
                                         now=time.monotonic()) if len(self._steps) > 1 else None)
        self._stats.render_resolution = self.config.avatar_resolution

    # -------------------------------------------------------------- public API
    def attach(self, track):
        """Start consuming ``track`` (camera); returns the avatar ``MediaStreamTrack`` to send."""
        if self._input is not None:
            raise RuntimeError("this session is already attached to a camera track")
        from gramcast.session_track import AvatarVideoTrack

        self._input = track
        self._output = AvatarVideoTrack(self)
        if self._pipelined:
            # The processor (renderer, tracker) is made in the render thread, where it draws.
            self._processor_ready = self._executor.submit(lambda: self.processor)
        self._task = asyncio.ensure_future(self._pump())
        return self._output

    def stats(self) -> dict[str, float]:
        self._stats.edge_search = int(self._searching_edges())
        return self._stats.as_dict()

    def _searching_edges(self) -> bool:
        # what the renderer does where it says (a multi-layer avatar's never searches), else the governor's
        # wish, else the configured value
        searching = getattr(self._processor, "searches_edges", None)
        if searching is not None:
            return bool(searching)
        wish = self._steps[self._quality.level].edge_search if self._quality is not None else None
        return wish if wish is not None else self.config.edge_samples != 0

    def set_avatar(self, avatar) -> None:
        """Switch to another avatar from the next rendered frame on. The processor makes its renderer in
        the render thread, between two frames: not on the caller's thread (the event loop), whose torch
        work would stall it and slow every later render (``gramcast.torch_threads``)."""
        self.avatar = avatar
        try:
            self._executor.submit(self._switch_avatar, avatar)
        except RuntimeError:  # the executor was shut down: the session is closing
            pass

    def _switch_avatar(self, avatar) -> None:
        # In the render thread, after any frame or processor construction submitted before: a processor
        # not made yet will be made for self.avatar, one made for this avatar already stays.
        if self._processor is None or self._made_for is avatar or self.avatar is not avatar:
            return
        self._processor.set_avatar(avatar)
        self._made_for = avatar

    async def close(self) -> None:
        self._ended = True
        self._new_frame.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._output is not None:
            self._output.stop()
        if self._track_executor is not None:
            self._track_executor.shutdown(wait=False, cancel_futures=True)
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------- internals
    @property
    def processor(self) -> FrameProcessor:
        if self._processor is None:
            from gramcast.compositing import AvatarFrameProcessor

            self._made_for = self.avatar
            self._processor = AvatarFrameProcessor(self.avatar, self.config)
        return self._processor

    def _stages(self) -> TwoStageFrameProcessor:
        return as_two_stage(self.processor)

    async def _pump(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        min_interval = 1.0 / self.config.max_fps if self.config.max_fps > 0 else 0.0
        last_time: float | None = None  # camera time of the last frame accepted
        prev_time: float | None = None  # camera time of the previous frame
        try:
            while True:
                frame = await self._input.recv()
                now = time.monotonic()
                self._stats.frames_in += 1
                self._stats._in_rate.tick(now)
                # The fps cap goes by the camera's timestamps, not by arrival times: frames that
                # arrive bunched up by network or scheduling jitter are not over the cap.
                t = float(frame.time) if frame.time is not None else now
                if prev_time is not None and 0.0 < t - prev_time < 1.0:
                    self._camera_interval = ewma(self._camera_interval, t - prev_time, 0.1)
                prev_time = t
                if last_time is not None and 0.0 <= t - last_time < min_interval * 0.9:
                    self._stats.frames_dropped += 1
                    continue
                last_time = t
                if self.config.trace is not None:
                    self.config.trace("recv", frame, now)
                if not self._can_take_frame():
                    # The pipeline is full: this frame waits in the one slot there is, replacing an
                    # older waiting frame (dropped, never queued), and starts when the tracker is
                    # free if that is soon enough (see _take_waiting).
                    if self._waiting is not None:
                        self._dropped_behind(now)
                    self._waiting = (frame, now)
                    continue
                self._start(frame, now)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:  # a broken camera stream ends this session only
            log.exception("avatar session stopped")
        finally:
            self._ended = True
            self._waiting = None
            self._new_frame.set()

    def _can_take_frame(self) -> bool:
        # A tracked frame waiting for the renderer blocks the tracker: tracking one more would
        # only replace it, and would take cores from the render.
        return not self._tracking and self._tracked is None

    def _start(self, frame, arrived: float) -> None:
        if self._quality is not None:
            self._set_quality(self._quality.frame(arrived))
        loop = asyncio.get_running_loop()
        try:
            if self._pipelined:
                fut = loop.run_in_executor(self._track_executor, self._track_work, frame, arrived)
            else:
                fut = loop.run_in_executor(self._executor, self._whole_work, frame, arrived)
        except RuntimeError:  # the executor was shut down: the session is closing
            return
        self._tracking = True
        fut.add_done_callback(self._track_done if self._pipelined else self._publish)
        fut.add_done_callback(self._tracker_free)

    def _track_done(self, fut: asyncio.Future) -> None:
        self._tracked = _result(fut, "tracking")
        if self._tracked is not None and not self._rendering:
            self._start_render()

    def _start_render(self) -> None:
        item, self._tracked = self._tracked, None
        try:
            fut = asyncio.get_running_loop().run_in_executor(self._executor, self._draw_work, item)
        except RuntimeError:
            return
        self._rendering = True
        fut.add_done_callback(self._publish)
        fut.add_done_callback(self._renderer_free)

    def _renderer_free(self, fut: asyncio.Future) -> None:
        self._rendering = False
        if self._tracked is not None:
            self._start_render()
        self._take_waiting()

    def _tracker_free(self, fut: asyncio.Future) -> None:
        self._tracking = False
        self._take_waiting()

    def _take_waiting(self) -> None:
        if self._waiting is None or self._ended or not self._can_take_frame():
            return
        waiting, self._waiting = self._waiting, None
        # A frame that waited up to half a camera interval starts now: a render that ran a little
        # long costs no frame. One that waited longer is dropped: the next camera frame comes in
        # under half an interval, so waiting frames never add more than that to the latency when
        # rendering falls behind for good.
        now = time.monotonic()
        if now - waiting[1] <= 0.5 * self._camera_interval or self._camera_interval == 0.0:
            self._start(*waiting)
        else:
            self._dropped_behind(now)

    def _dropped_behind(self, now: float) -> None:
        """A camera frame dropped because the session was still busy with earlier ones."""
        self._stats.frames_dropped += 1
        if self._quality is not None:
            self._set_quality(self._quality.dropped(now))

    def _set_quality(self, level: int | None) -> None:
        """Render at quality ``level`` from the next frame on (None: no change)."""
        if level is None:
            return
        s = self._stats
        before = s.quality_level
        if level > before and self._gives_up_nothing(before, level):
            level = self._quality.step_down()
        step = self._steps[level]
        # counted where the renderer searched (a multi-layer avatar's never does)
        s.edge_search_offs += int(step.edge_search is False and self._steps[before].edge_search is True
                                  and getattr(self._processor, "searches_edges", True))
        s.quality_level = level
        s.render_resolution = self._resolution(step)
        # for operators: a session stepping down is a machine short of cores
        log.info("avatar session render quality %s to level %d of %d: %d px%s (%d camera frames dropped so far)",
                 "down" if level > before else "up", level, len(self._steps) - 1, s.render_resolution,
                 "" if step.edge_search is None else f", edge search {'on' if step.edge_search else 'off'}",
                 s.frames_dropped)
        try:
            self._executor.submit(self._apply_quality, step)
        except RuntimeError:  # the executor was shut down: the session is closing
            pass

    def _gives_up_nothing(self, before: int, level: int) -> bool:
        """Whether stepping from ``before`` to ``level`` only turns off an edge search the renderer never makes (a
        multi-layer avatar's), so the session should go one step further at once."""
        a, b = self._steps[before], self._steps[level]
        return (level < len(self._steps) - 1 and a.resolution_scale == b.resolution_scale
                and getattr(self._processor, "can_search_edges", True) is False)

    def _resolution(self, step: QualityStep) -> int:
        """The render size of ``step``: a multiple of 8 (whole cells of the renderer's 1/4-resolution search)."""
        res = self.config.avatar_resolution
        return res if step.resolution_scale >= 1.0 else max(16, int(round(res * step.resolution_scale / 8.0)) * 8)

    def _apply_quality(self, step: QualityStep) -> None:
        # In the render thread, between frames (a new edge setting makes a renderer: torch work)
        set_edges = getattr(self.processor, "set_edge_samples", None)
        if set_edges is not None and step.edge_search is not None:
            set_edges(None if step.edge_search else 0)
        set_resolution = getattr(self.processor, "set_render_resolution", None)
        if set_resolution is not None:
            set_resolution(self._resolution(step))

    def _track_work(self, frame, arrived: float) -> TrackedFrame:
        t0 = time.monotonic()
        if self._processor_ready is not None:
            self._processor_ready.result()       # made in the render thread (first frame only)
        rgb = frame.to_ndarray(format="rgb24")
        t1 = time.monotonic()
        head, info = self._stages().track(rgb, float(frame.time) if frame.time is not None else arrived)
        return TrackedFrame(frame, arrived, rgb, head, info, (t0, t1, time.monotonic()))

    def _whole_work(self, frame, arrived: float):
        return self._draw_work(self._track_work(frame, arrived))

    def _draw_work(self, item: TrackedFrame):
        t_start = time.monotonic()
        out, info = self._stages().draw(item.rgb, item.head)
        t_drawn = time.monotonic()
        info = {**item.info, **info}
        rgb, frame = item.rgb, item.frame
        rows = self.config.passthrough_rows
        if rows:
            import cv2

            out = out.copy()
            out[:rows] = cv2.resize(rgb[:rows], (out.shape[1], rows), interpolation=cv2.INTER_NEAREST)
        video = output_video_frame(out, self.config.output_format)
        video.pts, video.time_base = frame.pts, frame.time_base
        # The encoder runs behind aiortc's relay, out of the session's sight: it reports its time
        # through the frame (gramcast.server.aiortc_latency calls this with the milliseconds).
        video.opaque = self.record_encode
        trace = self.config.trace
        if trace is not None:
            t_end = time.monotonic()
            for event, t in zip(("work_start", "rgb", "tracked"), item.times):
                trace(event, rgb, t)
            trace("render_start", rgb, t_start)
            t = t_start
            for event, key in (("rendered", "render_ms"), ("composed", "compose_ms")):
                t = min(t + float(info.get(key, 0.0)) / 1e3, t_drawn)
                trace(event, rgb, t)
            trace("work_end", rgb, t_end)
        return video, info, item.arrived

    def _publish(self, fut: asyncio.Future) -> None:
        done = _result(fut, "rendering")
        if done is None:
            return
        video, info, arrived = done
        s = self._stats
        for key in ("tracking_ms", "render_ms", "compose_ms"):
            if key in info:
                setattr(s, key, ewma(getattr(s, key), float(info[key])))
        if info.get("render_reused"):
            s.renders_reused += 1
        if info.get("tracking_still"):
            s.tracks_still += 1
        found = bool(info.get("face_found", True))
        if self._face_found and not found:
            s.faces_lost += 1
        self._face_found = found
        self._latest = (video, arrived)
        self._new_frame.set()
        if self.config.trace is not None:
            self.config.trace("published", video, time.monotonic())

    async def next_frame(self):
        """The newest avatar frame not yet sent (waits for one). Used by the output track."""
        from aiortc.mediastreams import MediaStreamError

        while self._latest is None:
            if self._ended:
                raise MediaStreamError
            self._new_frame.clear()
            await self._new_frame.wait()
        video, arrived = self._latest
        self._latest = None
        now = time.monotonic()
        s = self._stats
        s.frames_out += 1
        s._out_rate.tick(now)
        s.latency_ms = ewma(s.latency_ms, (now - arrived) * 1000.0 + s.encode_ms)
        if self.config.trace is not None:
            self.config.trace("handed", video, now)
        return video

    def record_encode(self, ms: float) -> None:
        self._stats.encode_ms = ewma(self._stats.encode_ms, ms)


def _result(fut: asyncio.Future, doing: str):
    """A worker's result; None where it was cancelled or failed (logged: one bad frame ends nothing)."""
    if fut.cancelled():
        return None
    if fut.exception() is not None:
        log.error("%s a frame failed: %r", doing, fut.exception())
        return None
    return fut.result()


def _pipeline_on(config: SessionConfig) -> bool:
    if config.pipeline is not None:
        return bool(config.pipeline)
    if config.backend != "torch":
        return False
    from gramcast.device import resolve_device

    return resolve_device(config.device).type != "cpu"


def _check_output_format(pixel_format: str) -> None:
    if pixel_format not in ("yuv420p", "rgb24"):
        raise ValueError(f"output_format must be 'yuv420p' or 'rgb24', not {pixel_format!r}")


def output_video_frame(rgb: np.ndarray, pixel_format: str = "yuv420p"):
    """An RGB (H, W, 3) uint8 array as the ``av.VideoFrame`` the session sends: yuv420p by default.

    Every video encoder aiortc has (VP8, H264) wants yuv420p and would otherwise convert each frame
    itself with libswscale (about 1.5 ms at 640x480 here, once per encoder); OpenCV's I420
    conversion uses the same BT.601 limited-range matrix in about 0.15 ms. Odd sizes, which 4:2:0
    cannot hold exactly, stay rgb24.
    """
    import av

    _check_output_format(pixel_format)
    h, w = rgb.shape[:2]
    if pixel_format == "rgb24" or h % 2 or w % 2:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    import cv2

    return av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420),
                                      format="yuv420p")
