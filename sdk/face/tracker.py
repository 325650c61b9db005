"""Live head tracking: mediapipe in tracking mode -> pose fit -> One-Euro smoothing -> face-lost policy."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, fields, replace

import cv2
import numpy as np

from gramcast.checks import is_finite, is_whole
from gramcast.errors import InvalidArgumentError
from gramcast.face.detection import DistantFaceMesh, close_all
from gramcast.face.filters import OneEuroConfig, OneEuroFilter
from gramcast.face.landmarks import Closeable, DetectedFace, FaceMesh
from gramcast.face.pose import HeadPose, estimate_pose
from gramcast.face.reference import ReferenceFace, load_reference
from gramcast.face.stillness import affine_motion_px, face_signature, frame_change
from gramcast.images import as_rgb

__all__ = ["TrackerConfig", "TrackedHead", "HeadTracker", "CHANNEL_ORDERS"]

#: The channel orders ``HeadTracker`` takes arrays in: RGB, or OpenCV's BGR (``cv2.VideoCapture``'s frames).
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class TrackerConfig:
    """angles / placement: One-Euro parameters for (yaw, pitch, roll) in radians and for the crop's
    centre and log-size in frame heights (a head moves ~0.3 frame heights/s where it turns ~1 rad/s).
    hold_s: how long the last pose is held after the face is lost; ease_s: how long it then takes to
    ease back to frontal. max_faces: faces detected per frame (the tracker follows one of them).
    still_px / max_still_frames / still_change: a frame in which the face's box moved less than ``still_px``
    frame pixels since the last tracked frame (``gramcast.face.stillness``), and changed by at most
    ``still_change`` grey levels (RMS), takes that frame's answer without running the face mesh, at most
    ``max_still_frames`` in a row; ``still_px = 0`` tracks every frame.

    A value no tracker could use is refused here, naming the field and what it may be: it would otherwise
    fail in the middle of a video (max_faces 0 stops mediapipe's graph, max_fit_error 0 divides by zero) or
    quietly give NaN poses (ease_s NaN)."""

    angles: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=1.0, beta=5.0))
    placement: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=1.0, beta=40.0))
    hold_s: float = 0.5
    ease_s: float = 1.0
    max_faces: int = 2
    max_fit_error: float = 0.3
    still_px: float = 0.25
    max_still_frames: int = 3
    still_change: float = 6.0

    def __post_init__(self):
        for name in ("angles", "placement"):
            one_euro = getattr(self, name)
            if not isinstance(one_euro, OneEuroConfig):
                raise InvalidArgumentError(f"TrackerConfig.{name} must be a OneEuroConfig, not {one_euro!r}")
            for f in fields(one_euro):
                # beta may be 0 (a fixed cutoff); a cutoff of 0 Hz would hold the first pose for ever
                _check_number(f"{name}.{f.name}", getattr(one_euro, f.name), low=0.0,
                              above=f.name != "beta", unit="Hz" if f.name != "beta" else "")
        _check_number("hold_s", self.hold_s, low=0.0, unit="seconds")
        _check_number("ease_s", self.ease_s, low=0.0, unit="seconds")
        _check_number("max_fit_error", self.max_fit_error, low=0.0, above=True)
        _check_number("still_px", self.still_px, low=0.0, unit="pixels (0: track every frame)")
        _check_number("still_change", self.still_change, low=0.0, unit="grey levels")
        _check_number("max_faces", self.max_faces, low=1, whole=True)
        _check_number("max_still_frames", self.max_still_frames, low=0, whole=True)


def _check_number(name: str, value, low: float, above: bool = False, whole: bool = False, unit: str = "") -> None:
    """Refuses a ``TrackerConfig`` field that is not a finite number at least ``low`` (more than it where
    ``above``; a whole number where ``whole``), naming the field and the range it may take."""
    ok = (is_whole(value) if whole else is_finite(value)) and (value > low if above else value >= low)
    if not ok:
        what = "a whole number" if whole else "a number"
        bound = f"more than {low:g}" if above else f"{low:g} or more"
        raise InvalidArgumentError(f"TrackerConfig.{name} must be {what}, {bound}{' ' + unit if unit else ''}; "
                                   f"got {value!r}")


@dataclass(frozen=True)
class TrackedHead:
    """One frame's answer: smoothed pose, confidence in [0, 1] (1 = a tight fit, 0 = no face) and the
    frame's timestamp (seconds). ``still``: the face held still, and this is the last tracked frame's answer
    (the face mesh did not run; ``TrackerConfig.still_px``)."""

    pose: HeadPose
    confidence: float
    timestamp: float
    face_found: bool
    still: bool = False

    @property
    def yaw_pitch(self) -> tuple[float, float]:
        return self.pose.yaw_pitch

    def frame_from_crop(self, size: int) -> np.ndarray:
        return self.pose.frame_from_crop(size)


def _frame_to_rgb(frame, channel_order: str) -> tuple[np.ndarray, float | None]:
    """The frame as ``(H, W, 3)`` uint8 RGB (an RGB uint8 array as it is: no copy per frame) and its own time
    (an ``av.VideoFrame``'s, else None). Arrays are converted as ``gramcast.images.as_rgb`` converts them."""
    if isinstance(frame, np.ndarray):
        rgb = as_rgb(frame, "the frame")
        if channel_order == "bgr":
            rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)    # a new contiguous array; the caller's stays as it is
        return rgb, None
    to_ndarray = getattr(frame, "to_ndarray", None)
    if to_ndarray is None:
        # no image at all, so a TypeError (what this has always raised); an array that is no image is an
        # InvalidImageError (as_rgb)
        raise TypeError("HeadTracker.update takes an RGB uint8 array or an av.VideoFrame (a video frame: (H, W, 3) "
                        "RGB, (H, W, 4) RGBA or (H, W) grey; uint8, uint16 or float in [0, 1]), not "
                        f"{type(frame).__module__}.{type(frame).__qualname__}; for a still image use "
                        "gramcast.images.load_image first")
    # the frame knows its own pixel format: channel_order is for arrays only
    return to_ndarray(format="rgb24"), frame.time


def _seconds(timestamp) -> float:
    """``timestamp`` (a number of seconds, numpy's included) as a float, or the error that says what is taken.
    Milliseconds cannot be told from seconds by their size (a clock may start anywhere), so they are not
    guessed at: the docs say seconds."""
    if not isinstance(timestamp, (str, bytes, bool, np.bool_)):     # float("1.0") and float(True) would pass
        try:
            t = float(timestamp)
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(t):
                return t
    raise InvalidArgumentError(
        f"HeadTracker.update's timestamp is the frame's time in seconds, a finite number (e.g. i / 30 for frame i "
        f"of a 30 fps camera; None: the frame's own time, else the monotonic clock), not {timestamp!r}; "
        "a datetime: (t - start).total_seconds(); milliseconds: divide by 1000")


def _scaled(pose: HeadPose, sx: float, sy: float) -> HeadPose:
    """``pose`` in a frame scaled by ``sx`` across and ``sy`` down (a sender changing its frame size keeps
    the picture and scales it)."""
    return replace(pose, center=(pose.center[0] * sx, pose.center[1] * sy),
                   crop_size=pose.crop_size * math.sqrt(sx * sy))


class HeadTracker(Closeable):
    """Per video frame: the smoothed head pose of one followed face.

    ``update(frame, timestamp=None)``: frame is an ``(H, W, 3)`` uint8 array in ``channel_order`` ("rgb", the
    default, or "bgr": OpenCV's ``cv2.VideoCapture`` frames; in the wrong order the pose is off by up to half a
    radian, silently) or an ``av.VideoFrame`` (any pixel format); grey, RGBA, uint16 and float-in-[0, 1] arrays
    are converted (``gramcast.images.as_rgb``), an empty or channel-first one is an ``InvalidImageError``.
    ``timestamp``: the frame's time in **seconds** (a number; not milliseconds); None: the frame's own time,
    else the monotonic clock. ``close()`` frees the mediapipe graphs (also the given ``mesh``); it may be called
    again, and ``update`` after it is a ``GramcastError``. Not thread-safe.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig(), reference: ReferenceFace | None = None,
                 mesh: FaceMesh | None = None, channel_order: str = "rgb"):
        if not isinstance(config, TrackerConfig):
            raise InvalidArgumentError(f"HeadTracker's config must be a TrackerConfig, not {config!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise InvalidArgumentError(f"channel_order must be 'rgb' or 'bgr' (OpenCV's frames), not {channel_order!r}")
        self.config = config
        self.channel_order = channel_order
        self._busy = threading.Lock()               # held by the update in progress
        self.reference = reference or load_reference()
        self._mesh = mesh or FaceMesh(static=False, max_faces=config.max_faces)
        #: where the whole frame shows no face: a distant one, through a window around it
        self._distant = DistantFaceMesh(config.max_faces)
        self._angles = OneEuroFilter(config.angles)
        self._placement = OneEuroFilter(config.placement)
        self._last: HeadPose | None = None          # last smoothed pose while the face was visible
        self._last_seen: float | None = None
        self._last_centre: np.ndarray | None = None
        self.faces_lost = 0                          # times the followed face disappeared
        self._lost_counted = False
        self.frames_still = 0                        # frames answered without the face mesh (face held still)
        self._still_run = 0
        # the last tracked frame's answer, its face's signature, box centre and side, and the frame's shape
        self._tracked: tuple[TrackedHead, np.ndarray, tuple[float, float], float, tuple] | None = None
        self._shape: tuple | None = None             # the last frame's shape: what the pixel coordinates above are in
        self._last_t: float | None = None            # the last frame's timestamp

    def _choose(self, faces: list[DetectedFace]) -> DetectedFace | None:
        if not faces:
            return None
        if self._last_centre is None or len(faces) == 1:
            return faces[0]
        return min(faces, key=lambda f: float(np.linalg.norm(f.center - self._last_centre)))

    def update(self, frame, timestamp: float | None = None) -> TrackedHead:
        """The head in ``frame`` at ``timestamp`` seconds (see the class docstring). A frame or timestamp that is
        refused changes nothing: the next good frame is tracked as if it had not come."""
        self._still_open(self._mesh)
        # mediapipe's graphs crash the process (a segfault) when two threads run them at once: one tracker
        # follows one video stream, in one thread at a time
        if not self._busy.acquire(blocking=False):
            from gramcast.errors import GramcastError

            raise GramcastError("HeadTracker.update is running in another thread: a tracker follows one video "
                                "stream, one frame at a time; give each thread (each camera) its own HeadTracker")
        try:
            return self._update(frame, timestamp)
        finally:
            self._busy.release()

    def _update(self, frame, timestamp) -> TrackedHead:
        # both checked before any state changes: an empty frame once left a zero size behind for the next
        rgb, frame_time = _frame_to_rgb(frame, self.channel_order)
        if timestamp is not None:
            t = _seconds(timestamp)
        else:
            t = float(frame_time) if frame_time is not None else time.monotonic()
        if self._shape is not None and rgb.shape != self._shape:
            self._frame_size_changed(self._shape, rgb.shape)
        if self._last_t is not None and t < self._last_t:
            self._clock_went_back(t)
        self._shape, self._last_t = rgb.shape, t
        still = self._still_answer(rgb, t)
        if still is not None:
            return still
        head = self._track(rgb, t)
        self._remember(rgb, head)
        return head

    def _frame_size_changed(self, old: tuple, new: tuple) -> None:
        """A camera that changed its frame size (a WebRTC sender adapting to its bandwidth halves it): what is
        kept in the old frame's pixels is scaled to the new frame's, or dropped where it is a crop of it."""
        sx, sy = new[1] / old[1], new[0] / old[0]
        self._distant.reset()             # its window may lie outside the new frame: the face is sought anew
        self._tracked, self._still_run = None, 0
        self._placement.reset()           # kept in frame heights, which a new aspect ratio changes
        if self._last is not None:        # the pose held while the face is lost
            self._last = _scaled(self._last, sx, sy)
        if self._last_centre is not None:
            self._last_centre = self._last_centre * [sx, sy]

    def _clock_went_back(self, t: float) -> None:
        """Timestamps that restarted (a source reopened, a file looping): the time the face was last seen is
        moved onto the new clock as if this frame followed the last at once, so a face lost stays lost as
        long and a held pose does not jump back. (The filters restart themselves on an earlier timestamp.)"""
        assert self._last_t is not None
        if self._last_seen is not None:
            self._last_seen += t - self._last_t

    def _still_answer(self, rgb: np.ndarray, t: float) -> TrackedHead | None:
        """The last tracked frame's answer (at time ``t``) where the face has not moved since; else None."""
        cfg = self.config
        if self._tracked is None or cfg.still_px <= 0.0 or self._still_run >= cfg.max_still_frames:
            return None
        head, reference, centre, side, shape = self._tracked
        # a camera that changed its frame size (a WebRTC sender adapting) is tracked anew
        current = face_signature(rgb, centre, side) if rgb.shape == shape else None
        if (current is None or frame_change(reference, current) > cfg.still_change
                or affine_motion_px(reference, current, side) > cfg.still_px):
            return None
        self._still_run += 1
        self.frames_still += 1
        return replace(head, timestamp=t, still=True)

    def _remember(self, rgb: np.ndarray, head: TrackedHead) -> None:
        """Keep a tracked frame's answer and its face's signature for ``_still_answer``."""
        self._still_run = 0
        self._tracked = None
        if head.face_found and self.config.still_px > 0.0:
            # the face's inner box (the aligned crop spans about twice the face)
            centre, side = head.pose.center, 0.5 * head.pose.crop_size
            reference = face_signature(rgb, centre, side)
            if reference is not None:
                self._tracked = (head, reference, centre, side, rgb.shape)

    def _track(self, rgb: np.ndarray, t: float) -> TrackedHead:
        h = float(rgb.shape[0])
        faces = self._mesh.detect(rgb) if self._distant.window is None else []
        if faces:
            self._distant.reset()
        else:
            faces = self._distant.detect(rgb, self._last_centre)
        face = self._choose(faces)
        if face is not None:
            raw = estimate_pose(face, self.reference)
            if self._last_seen is not None and t - self._last_seen > self.config.hold_s:
                self._angles.reset()                 # reacquired after a gap: no blending with stale state
                self._placement.reset()
            a = self._angles([raw.yaw, raw.pitch, raw.roll], t)
            p = self._placement([raw.center[0] / h, raw.center[1] / h, math.log(max(raw.crop_size, 1e-6) / h)], t)
            pose = replace(raw, yaw=a[0], pitch=a[1], roll=a[2], center=(p[0] * h, p[1] * h),
                           crop_size=math.exp(p[2]) * h)
            self._last, self._last_seen, self._last_centre = pose, t, face.center
            self._lost_counted = False
            conf = float(np.clip(1.0 - raw.fit_error / self.config.max_fit_error, 0.0, 1.0))
            return TrackedHead(pose, conf, t, True)
        if self._last is None:
            pose = HeadPose(center=(rgb.shape[1] / 2.0, h / 2.0), crop_size=0.9 * min(rgb.shape[:2]))
            return TrackedHead(pose, 0.0, t, False)
        if not self._lost_counted:
            self.faces_lost += 1
            self._lost_counted = True
        return TrackedHead(self._eased(t), 0.0, t, False)

    def _eased(self, t: float) -> HeadPose:
        assert self._last is not None and self._last_seen is not None
        gone = t - self._last_seen - self.config.hold_s
        w = float(np.clip(gone / max(self.config.ease_s, 1e-6), 0.0, 1.0))
        w = w * w * (3 - 2 * w)                        # smoothstep: no jolt at either end
        k = 1.0 - w
        return replace(self._last, yaw=self._last.yaw * k, pitch=self._last.pitch * k, roll=self._last.roll * k)

    def close(self) -> None:
        parts, self._mesh = (self._mesh, self._distant), None     # None: closed (``update`` says so)
        close_all(parts)
