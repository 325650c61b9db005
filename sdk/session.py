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
import fractions
import logging
import time

import numpy as np

from gramcast.frame_processor import FrameProcessor, TrackedFrame, TwoStageFrameProcessor, as_two_stage, is_two_stage
from gramcast.render_quality import QualityGovernorConfig, QualityLadder, QualityStep, quality_steps
from gramcast.session_config import OUTPUT_PRESETS, SessionConfig, check_output_format
from gramcast.session_stats import SessionStats, ewma

# SessionConfig and OUTPUT_PRESETS live in gramcast.session_config; they are named here too, where apps import them
__all__ = ["AvatarSession", "SessionConfig", "OUTPUT_PRESETS", "output_video_frame"]

log = logging.getLogger(__name__)

#: The clock of output frames whose camera frame had none (RTP's video clock).
VIDEO_CLOCK_HZ = 90000

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
        self._own_processor = processor is None     # the session made it, so the session closes it
        self.avatar = self._checked_avatar(avatar)
        self._processor = processor
        self._made_for = avatar      # the avatar the processor renders
        self._pipelined = _pipeline_on(self.config) and (processor is None or is_two_stage(processor))
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gramcast-render")
        self._track_executor = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gramcast-track")
                                if self._pipelined else None)
        self._processor_ready: concurrent.futures.Future | None = None
        self._stats = SessionStats()
        self._failures = FailureLog()
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
        self._ended = False      # no more camera frames come (the camera ended, or the session closed)
        self._closed = False
        self._closing: asyncio.Future | None = None     # the close that a stopped output track started
        self._face_found = True
        # the levels of render quality the session steps through while it drops frames (None: just the one)
        steps = quality_steps(self.config.edge_samples is None,
                              self.config.resolution_steps if self.config.backend == "torch" else ())
        governor = quality_governor or QualityGovernorConfig()
        self._quality = (QualityLadder(steps, self.config.avatar_resolution, governor, now=time.monotonic())
                         if len(steps) > 1 else None)
        self._stats.render_resolution = self.config.avatar_resolution

    # -------------------------------------------------------------- public API
    def attach(self, track):
        """Start consuming ``track`` (camera); returns the avatar ``MediaStreamTrack`` to send. Stopping that
        track (``pc.close()`` does) closes the session."""
        if self._closed:
            raise RuntimeError("this session is closed: make a new AvatarSession")
        if self._input is not None:
            raise RuntimeError("this session is already attached to a camera track")
        if getattr(track, "kind", None) != "video" or not callable(getattr(track, "recv", None)):
            from gramcast.errors import InvalidArgumentError

            raise InvalidArgumentError(f"attach takes the camera's video track (an aiortc MediaStreamTrack of "
                                       f"kind 'video'), got {track!r}")
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
        wish = self._quality.step.edge_search if self._quality is not None else None
        return wish if wish is not None else self.config.edge_samples != 0

    def set_avatar(self, avatar) -> None:
        """Switch to another avatar from the next rendered frame on. The processor makes its renderer in
        the render thread, between two frames: not on the caller's thread (the event loop), whose torch
        work would stall it and slow every later render (``gramcast.torch_threads``)."""
        self.avatar = self._checked_avatar(avatar)
        try:
            switched = self._executor.submit(self._switch_avatar, avatar)
        except RuntimeError:  # the executor was shut down: the session is closing
            return
        switched.add_done_callback(_log_failure("switching the avatar"))

    def _checked_avatar(self, avatar):
        """``avatar``, or an ``InvalidArgumentError`` where the session's own processor could not render it
        (every frame would fail); a processor the application gives takes what it takes."""
        from gramcast.errors import InvalidArgumentError

        if avatar is None:
            raise InvalidArgumentError("an avatar session needs an avatar: gramcast.Avatar.load(path) or "
                                       "gramcast.enroll(photo)")
        if self._own_processor:
            from gramcast.avatar import Avatar

            if not isinstance(avatar, Avatar):
                raise InvalidArgumentError(f"the avatar must be a gramcast.Avatar (Avatar.load(path), enroll(photo)), "
                                           f"got {type(avatar).__module__}.{type(avatar).__qualname__}")
        return avatar

    def _switch_avatar(self, avatar) -> None:
        # In the render thread, after any frame or processor construction submitted before: a processor
        # not made yet will be made for self.avatar, one made for this avatar already stays.
        if self._processor is None or self._made_for is avatar or self.avatar is not avatar:
            return
        self._processor.set_avatar(avatar)
        self._made_for = avatar

    async def close(self) -> None:
        """Stops the session: the camera is no longer read, the output track ends, the worker threads and the
        processor the session made (its head tracker's mediapipe graphs) are freed once the frame in hand is
        done. Idempotent."""
        if self._closed:
            return
        self._closed = self._ended = True
        self._waiting = None
        self._new_frame.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._output is not None:
            self._output.stop()
        for executor in (self._track_executor, self._executor if self._own_executor else None):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        await self._release()

    async def _release(self) -> None:
        """Closes the processor the session made, after the frame in hand (its threads finish it first)."""
        ready, own = self._processor_ready, self._own_processor

        def release():
            for executor in (self._track_executor, self._executor if self._own_executor else None):
                if executor is not None:
                    executor.shutdown(wait=True)
            if ready is not None:
                concurrent.futures.wait([ready])
            processor = self._processor
            if own and processor is not None and callable(getattr(processor, "close", None)):
                processor.close()

        try:
            if self._own_executor:
                await asyncio.to_thread(release)
            else:            # a shared render thread: after what it runs for this session
                await asyncio.wrap_future(self._executor.submit(release))
        except Exception:    # a processor that fails to close leaves nothing else to do
            log.exception("closing the avatar session's processor failed")

    def _output_stopped(self) -> None:
        """The output track was stopped (its peer connection closed): nobody receives frames, so stop."""
        if self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._closed = self._ended = True     # no loop to close on: at least no new frames
            return
        self._closing = asyncio.ensure_future(self.close())    # held: the loop keeps only weak references

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
        last_arrival = 0.0              # and when it arrived
        prev_time: float | None = None  # camera time of the previous frame
        try:
            while True:
                frame = await self._input.recv()
                now = time.monotonic()
                self._stats.frames_in += 1
                self._stats._in_rate.tick(now)
                # The fps cap goes by the camera's timestamps, not by arrival times: frames that
                # arrive bunched up by network or scheduling jitter are not over the cap. Timestamps that do
                # not advance (a source that repeats or restarts them, whole seconds) say nothing of the rate:
                # then the arrival times do.
                t = float(frame.time) if frame.time is not None else now
                if prev_time is not None and 0.0 < t - prev_time < 1.0:
                    self._camera_interval = ewma(self._camera_interval, t - prev_time, 0.1)
                prev_time = t
                gap = t - last_time if last_time is not None and t > last_time else now - last_arrival
                if last_time is not None and gap < min_interval * 0.9:
                    self._stats.frames_dropped += 1
                    continue
                last_time, last_arrival = t, now
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
            # frames already taken (tracking, rendering, the one waiting) are still sent: next_frame ends the
            # output once they are out
            self._ended = True
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
        self._tracked = self._result(fut, "tracking")
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
        if self._ended:
            self._new_frame.set()     # the output may end once nothing is left in hand

    def _tracker_free(self, fut: asyncio.Future) -> None:
        self._tracking = False
        self._take_waiting()
        if self._ended:
            self._new_frame.set()

    def _in_hand(self) -> bool:
        """Whether a camera frame taken is still on its way to the output."""
        return self._tracking or self._rendering or self._tracked is not None or self._waiting is not None

    def _take_waiting(self) -> None:
        if self._waiting is None or self._closed or not self._can_take_frame():
            return
        waiting, self._waiting = self._waiting, None
        # A frame that waited up to half a camera interval starts now: a render that ran a little
        # long costs no frame. One that waited longer is dropped: the next camera frame comes in
        # under half an interval, so waiting frames never add more than that to the latency when
        # rendering falls behind for good.
        now = time.monotonic()
        if now - waiting[1] <= 0.5 * self._camera_interval or self._camera_interval == 0.0 or self._ended:
            self._start(*waiting)
        else:
            self._dropped_behind(now)

    def _dropped_behind(self, now: float) -> None:
        """A camera frame dropped because the session was still busy with earlier ones."""
        self._stats.frames_dropped += 1
        if self._quality is not None:
            searchable = getattr(self._processor, "can_search_edges", True) is not False
            self._set_quality(self._quality.dropped(now, searchable))

    def _set_quality(self, step: QualityStep | None) -> None:
        """Render at the ladder's new ``step`` from the next frame on (None: no change)."""
        if step is None:
            return
        s, ladder = self._stats, self._quality
        before, level = s.quality_level, ladder.level
        # counted where the renderer searched (a multi-layer avatar's never does)
        s.edge_search_offs += int(step.edge_search is False and ladder.steps[before].edge_search is True
                                  and getattr(self._processor, "searches_edges", True))
        s.quality_level = level
        s.render_resolution = ladder.resolution(step)
        # for operators: a session stepping down is a machine short of cores
        log.info("avatar session render quality %s to level %d of %d: %d px%s (%d camera frames dropped so far)",
                 "down" if level > before else "up", level, len(ladder.steps) - 1, s.render_resolution,
                 "" if step.edge_search is None else f", edge search {'on' if step.edge_search else 'off'}",
                 s.frames_dropped)
        try:
            self._executor.submit(self._apply_quality, step)
        except RuntimeError:  # the executor was shut down: the session is closing
            pass

    def _apply_quality(self, step: QualityStep) -> None:
        # In the render thread, between frames (a new edge setting makes a renderer: torch work)
        set_edges = getattr(self.processor, "set_edge_samples", None)
        if set_edges is not None and step.edge_search is not None:
            set_edges(None if step.edge_search else 0)
        set_resolution = getattr(self.processor, "set_render_resolution", None)
        if set_resolution is not None:
            set_resolution(self._quality.resolution(step))

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
        if frame.time_base is not None:
            video.pts, video.time_base = frame.pts, frame.time_base
        else:   # a frame made without a clock (av.VideoFrame.from_ndarray): its arrival time on the video clock
            video.pts, video.time_base = int(item.arrived * VIDEO_CLOCK_HZ), fractions.Fraction(1, VIDEO_CLOCK_HZ)
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
        done = self._result(fut, "rendering")
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
            if self._closed or (self._ended and not self._in_hand()):
                if self._output is not None and self._output.readyState == "live":
                    self._output.stop()       # ended for its listeners too ("ended" event, readyState)
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

    def _result(self, fut: asyncio.Future, doing: str):
        """A worker's result; None where it was cancelled or failed (counted and logged: one bad frame ends
        nothing)."""
        if fut.cancelled():
            return None
        if fut.exception() is not None:
            self._stats.frames_failed += 1
            self._failures.failed(doing, fut.exception(), time.monotonic())
            return None
        return fut.result()

    def record_encode(self, ms: float) -> None:
        self._stats.encode_ms = ewma(self._stats.encode_ms, ms)


def _log_failure(doing: str):
    """A done-callback for a worker's future whose result nobody waits for: logs its error."""
    def done(fut: concurrent.futures.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("%s failed", doing, exc_info=fut.exception())
    return done


class FailureLog:
    """Logs the frames a session fails: the first with its traceback, then at most one line every
    ``every_s`` seconds with how many failed since (a broken renderer fails every frame, which would be 25
    lines a second)."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.last: float | None = None
        self.since = 0

    def failed(self, doing: str, exc: BaseException, now: float) -> None:
        if self.last is None:
            log.error("%s a frame failed", doing, exc_info=exc)
        elif now - self.last >= self.every_s:
            log.error("%s failed %d more frames in %.0f s; the last: %r", doing, self.since + 1, now - self.last, exc)
        else:
            self.since += 1
            return
        self.last, self.since = now, 0


def _pipeline_on(config: SessionConfig) -> bool:
    if config.pipeline is not None:
        return bool(config.pipeline)
    if config.backend != "torch":
        return False
    from gramcast.device import resolve_device

    return resolve_device(config.device).type != "cpu"


def output_video_frame(rgb: np.ndarray, pixel_format: str = "yuv420p"):
    """An RGB (H, W, 3) uint8 array as the ``av.VideoFrame`` the session sends: yuv420p by default.

    Every video encoder aiortc has (VP8, H264) wants yuv420p and would otherwise convert each frame
    itself with libswscale (about 1.5 ms at 640x480 here, once per encoder); OpenCV's I420
    conversion uses the same BT.601 limited-range matrix in about 0.15 ms. Odd sizes, which 4:2:0
    cannot hold exactly, stay rgb24.
    """
    import av

    check_output_format(pixel_format)
    h, w = rgb.shape[:2]
    if pixel_format == "rgb24" or h % 2 or w % 2:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    import cv2

    return av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420),
                                      format="yuv420p")
