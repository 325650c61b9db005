"""Whether a tracked face has moved since the frame it was last tracked in (pure functions).

A participant who sits still sends 25 frames a second, and running the face mesh on each (~4-6 ms a frame)
becomes most of such a session's work once its render is reused (``gramcast.render_reuse``). Between two
frames, a small grey *signature* of the face's box is compared: the global affine flow that best explains
their difference (one level of Lucas-Kanade: ``I1 - I0 ~ -grad I0 . (A x + b)``, least squares over the
cells) says how far, in frame pixels, any part of the box moved. Sensor noise, averaged over each cell's
pixels and uncorrelated with the image's gradients, moves that estimate by hundredths of a pixel; a head
that shifts, turns or nods by a quarter pixel moves it by a quarter pixel. Large changes (a move of many
pixels between two frames, a light switched on) break the linear model: ``frame_change`` reports them by the
difference's own size.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["SIGNATURE_SIDE", "face_signature", "affine_motion_px", "frame_change"]

#: Cells a side of a signature: ~8x8 frame pixels each for a face box of 200 px.
SIGNATURE_SIDE = 24


def face_signature(rgb: np.ndarray, center: tuple[float, float], side: float,
                   cells: int = SIGNATURE_SIDE) -> np.ndarray | None:
    """The box of ``side`` frame pixels around ``center`` (u, v) of ``rgb`` ``(H, W, 3)`` uint8, grey, averaged
    into ``cells``² cells: ``(cells, cells)`` float32 in 0..255. None where the box leaves the frame or is
    smaller than the cells."""
    half = side / 2.0
    x0, y0 = int(round(center[0] - half)), int(round(center[1] - half))
    n = int(round(side))
    if n < cells or x0 < 0 or y0 < 0 or x0 + n > rgb.shape[1] or y0 + n > rgb.shape[0]:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y0 + n, x0:x0 + n]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (cells, cells), interpolation=cv2.INTER_AREA).astype(np.float32)


def frame_change(reference: np.ndarray, current: np.ndarray) -> float:
    """RMS difference of two signatures (grey levels): what the linear model cannot stand for when large."""
    return float(np.sqrt(np.mean((current - reference) ** 2)))


def affine_motion_px(reference: np.ndarray, current: np.ndarray, side: float) -> float:
    """The largest displacement, in frame pixels, over a box of ``side`` pixels, of the affine flow that best
    explains ``current - reference`` (two ``face_signature`` s of the same box), to first order."""
    n = reference.shape[0]
    gy, gx = np.gradient(reference.astype(np.float64))
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float64) - (n - 1) / 2.0
    design = np.stack([gx, gx * xs, gx * ys, gy, gy * xs, gy * ys], -1).reshape(-1, 6)
    p, *_ = np.linalg.lstsq(design, -(current.astype(np.float64) - reference).ravel(), rcond=None)
    c = (n - 1) / 2.0
    corners = np.array([[-c, -c], [c, -c], [-c, c], [c, c]])
    u = p[0] + p[1] * corners[:, 0] + p[2] * corners[:, 1]
    v = p[3] + p[4] * corners[:, 0] + p[5] * corners[:, 1]
    return float(np.hypot(u, v).max() * side / n)
