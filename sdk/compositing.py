"""Placing the rendered avatar in the output video frame.

The renderer draws the avatar as an aligned crop (the enrollment template at the tracked yaw/pitch).
Roll, scale and position of the head are not rendered in 3D: the crop is warped into the frame by a
2D similarity so the avatar sits where the head was, then composited over a background.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any

import cv2
import numpy as np

from gramcast.face.geometry import to_index_matrix
from gramcast.torch_threads import on_torch_thread


def similarity_matrix(scale: float, angle: float, src_center, dst_center) -> np.ndarray:
    """2x3 matrix mapping source pixels to destination pixels: ``dst = s * R(angle) (src - c_src) + c_dst``.

    ``angle`` is in radians and turns clockwise on screen (image y points down), matching a head
    that rolls towards its right shoulder as seen by the camera when positive.
    """
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    rot = np.array([[c, -s], [s, c]])
    src = np.asarray(src_center, dtype=np.float64)
    dst = np.asarray(dst_center, dtype=np.float64)
    return np.concatenate([rot, (dst - rot @ src)[:, None]], axis=1)


def over(fg_rgb: np.ndarray, alpha: np.ndarray, bg_rgb: np.ndarray) -> np.ndarray:
    """Straight-alpha "over": (H,W,3) uint8/float fg, (H,W) or (H,W,1) alpha in [0,1], (H,W,3) bg -> uint8."""
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    out = fg_rgb.astype(np.float32) * a + bg_rgb.astype(np.float32) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def premultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour ``(h, w, 3)`` uint8 and alpha ``(h, w)`` in [0, 1] -> premultiplied RGBA ``(h, w, 4)``
    uint8 (``Renderer.render_premultiplied`` makes this straight from a render)."""
    a = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    colour = np.rint(rgb.astype(np.float32) * a[..., None])
    return np.concatenate([colour, np.rint(a * 255.0)[..., None]], axis=-1).astype(np.uint8)


def place_rgba(bg_rgb: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp a straight-alpha image by ``matrix`` (dst <- src, 2x3) and composite it over ``bg_rgb``.

    bg_rgb: (H, W, 3) uint8; rgb: (h, w, 3) uint8; alpha: (h, w) float in [0, 1]. See ``place_premultiplied``.
    """
    return place_premultiplied(bg_rgb, premultiply(rgb, alpha), matrix)


def place_premultiplied(bg_rgb: np.ndarray, rgba: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp a premultiplied RGBA image ``(h, w, 4)`` uint8 by ``matrix`` (dst <- src, 2x3) and composite it
    over ``bg_rgb`` ``(H, W, 3)`` uint8: a new frame.

    Premultiplied colour warps without dark fringes (a transparent texel adds nothing to its
    neighbours). All in 8 bits, in OpenCV's integer kernels: 1.2 ms for a 256² avatar scaled 1.3x into a
    640x480 frame against 2.7 ms in float32. The 8-bit warp weighs neighbours in steps of 1/32, so it
    differs from a float warp by a tenth of a level on average and a few levels at the sharpest
    texel-to-texel edges (tests/test_compositing.py). Only the rectangle the warped image covers is
    touched (the avatar is a fraction of the frame).
    """
    h, w = bg_rgb.shape[:2]
    sh, sw = rgba.shape[:2]
    m = np.asarray(matrix, np.float64)
    corners = np.array([[0, 0], [sw, 0], [0, sh], [sw, sh]], np.float64) @ m[:, :2].T + m[:, 2]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = bg_rgb.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    shifted = m.copy()
    shifted[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(np.ascontiguousarray(rgba), shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    keep = cv2.cvtColor(255 - warped[..., 3], cv2.COLOR_GRAY2RGB)     # how much background shows through
    roi = out[y0:y1, x0:x1]
    roi[...] = cv2.add(cv2.multiply(roi, keep, scale=1.0 / 255.0), cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB))
    return out


def fit_inside(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """3x3 matrix taking ``src_wh`` pixels into a ``dst_wh`` frame at one scale, as large as fits, centred:
    an output frame of another shape than the camera's (a 16:9 webcam sent as 480p) keeps the head's
    proportions and shows all of the camera's view (the background fills the margin)."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    scale = min(dw / sw, dh / sh)
    return np.array([[scale, 0.0, (dw - scale * sw) / 2.0], [0.0, scale, (dh - scale * sh) / 2.0], [0.0, 0.0, 1.0]])


def cover(image: np.ndarray, size_wh: tuple[int, int], interpolation: int) -> np.ndarray:
    """``image`` scaled to fill ``size_wh`` at one scale, the overhang cropped evenly (no stretching)."""
    w, h = size_wh
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    cw, ch = min(iw, max(1, round(w / scale))), min(ih, max(1, round(h / scale)))
    x0, y0 = (iw - cw) // 2, (ih - ch) // 2
    return cv2.resize(np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]), (w, h), interpolation=interpolation)


@functools.lru_cache(maxsize=8)
def _color_plate(w: int, h: int, color: tuple[int, int, int]) -> np.ndarray:
    """A read-only frame of one colour: copying it is a memcpy (~0.04 ms at 640x480), while filling a
    frame from a 3-byte pattern costs numpy ~2 ms, a tenth of a 2-core session's frame budget."""
    plate = np.empty((h, w, 3), np.uint8)
    plate[...] = np.asarray(color, np.uint8)
    plate.flags.writeable = False
    return plate


def make_background(kind: str, size_wh: tuple[int, int], camera_rgb: np.ndarray | None = None,
                    color=(24, 24, 28), image: np.ndarray | None = None) -> np.ndarray:
    """The frame behind the avatar: ``color``, ``blur`` (the camera frame, heavily blurred) or ``image``; a
    camera frame or image of another shape than the output fills it at one scale (``cover``), unstretched."""
    w, h = size_wh
    if kind == "color":
        return _color_plate(int(w), int(h), tuple(int(c) for c in color)).copy()
    if kind == "blur":
        if camera_rgb is None:
            raise ValueError("the blur background needs the camera frame")
        small = cover(camera_rgb, (max(w // 8, 1), max(h // 8, 1)), cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), 3)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "image":
        if image is None:
            raise ValueError("the image background needs SessionConfig.background_image")
        return cover(np.asarray(image, np.uint8)[..., :3], (w, h), cv2.INTER_AREA)
    raise ValueError(f"unknown background {kind!r}; use 'color', 'blur' or 'image'")


class AvatarFrameProcessor:
    """Camera frame -> tracked pose -> cached avatar render -> placed in the output frame.

    ``process`` does a frame at once; ``track`` and ``draw`` are its two halves, which
    ``AvatarSession`` runs in two threads to overlap one frame's tracking with the previous render."""

    def __init__(self, avatar, config, tracker=None, renderer=None):
        from gramcast.face import HeadTracker, TrackerConfig
        from gramcast.render_reuse import RenderReuse

        self.config = config
        self.tracker = tracker or HeadTracker(TrackerConfig(still_px=config.still_px))
        self.edge_samples = config.edge_samples
        self._avatar = avatar
        self.renderer = renderer or self._renderer(avatar)
        #: the last render, and whether it may stand for the next frame's (``SessionConfig.reuse_render_px``)
        self.reuse = RenderReuse(config.reuse_render_px)
        #: the side of the avatar render now (``set_render_resolution``; starts at the config's)
        self.render_resolution = int(config.avatar_resolution)

    def _renderer(self, avatar):
        from gramcast.avatar import Renderer, RenderSettings

        return on_torch_thread(Renderer, avatar, device=self.config.device, backend=self.config.backend,
                               settings=RenderSettings(edge_samples=self.edge_samples))

    def close(self) -> None:
        """Frees the head tracker's mediapipe graphs (~50 MB a session); call it once no frame runs."""
        self.tracker.close()

    def set_avatar(self, avatar) -> None:
        """Render ``avatar`` from the next frame on (call it where ``draw`` runs: it does torch work)."""
        self._avatar = avatar
        self.renderer = self._renderer(avatar)

    def set_edge_samples(self, samples: int | None) -> None:
        """The renderer's occlusion-edge search from the next frame on (``RenderSettings.edge_samples``;
        call it where ``draw`` runs). A multi-layer avatar's renderer, which does not search, is kept."""
        if samples == self.edge_samples:
            return
        self.edge_samples = samples
        if self.can_search_edges:
            self.renderer = self._renderer(self._avatar)

    def set_render_resolution(self, resolution: int) -> None:
        """Render at ``resolution``² from the next frame on (the placement scales it to the head either way)."""
        self.render_resolution = int(resolution)

    @property
    def can_search_edges(self) -> bool:
        """Whether this avatar's renderer searches occlusion edges when asked to (one drawn layer; a
        multi-layer avatar's never does)."""
        return getattr(self.renderer, "num_drawn_layers", 1) == 1

    @property
    def searches_edges(self) -> bool:
        """Whether the renderer's frames search occlusion edges now (a multi-layer avatar's never do)."""
        return bool(getattr(self.renderer, "searches_edges", False))

    def process(self, rgb: np.ndarray, timestamp: float) -> tuple[np.ndarray, dict[str, Any]]:
        tracked, info = self.track(rgb, timestamp)
        out, drawn = self.draw(rgb, tracked)
        return out, {**info, **drawn}

    def track(self, rgb: np.ndarray, timestamp: float):
        """The head in the camera frame ``rgb`` (H, W, 3) uint8 (a ``TrackedHead``) and its timing."""
        t0 = time.perf_counter()
        tracked = self.tracker.update(rgb, timestamp)
        info = {"face_found": tracked.face_found, "tracking_still": bool(getattr(tracked, "still", False))}
        # a frame answered without the face mesh reports no tracking time: tracking_ms stays what tracking costs
        if not info["tracking_still"]:
            info["tracking_ms"] = (time.perf_counter() - t0) * 1e3
        return tracked, info

    def draw(self, rgb: np.ndarray, tracked) -> tuple[np.ndarray, dict[str, Any]]:
        """The output frame: the avatar rendered at ``tracked``'s pose, placed where the head is in ``rgb``."""
        cfg = self.config
        t1 = time.perf_counter()
        res = self.render_resolution
        renderer = self.renderer
        avatar = self.reuse.lookup(renderer, tracked.yaw_pitch, res)
        reused = avatar is not None
        if not reused:
            avatar = on_torch_thread(renderer.render_premultiplied, tracked.yaw_pitch, res)
            self.reuse.store(renderer, tracked.yaw_pitch, res, avatar)
        t2 = time.perf_counter()
        out_w, out_h = cfg.size_for((rgb.shape[1], rgb.shape[0]))
        bg = make_background(cfg.background, (out_w, out_h), rgb, cfg.background_color, cfg.background_image)
        # frame pixels -> output pixels (one scale, centred), then crop pixels -> frame pixels
        to_out = fit_inside((rgb.shape[1], rgb.shape[0]), (out_w, out_h))
        frame_from_crop = np.vstack([tracked.frame_from_crop(res), [0.0, 0.0, 1.0]])
        matrix = (to_out @ frame_from_crop)[:2]
        out = place_premultiplied(bg, avatar, to_index_matrix(matrix))
        t3 = time.perf_counter()
        # a reused render reports no render time: the session's render_ms stays what a render costs
        timing = {"compose_ms": (t3 - t2) * 1e3, "render_reused": reused}
        if not reused:
            timing["render_ms"] = (t2 - t1) * 1e3
        return out, timing
