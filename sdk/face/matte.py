"""Foreground matte with mediapipe's bundled selfie segmentation (imported lazily)."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from gramcast.face.landmarks import Closeable, _import_mediapipe

__all__ = ["Matting", "foreground_matte"]


class Matting(Closeable):
    """Person-vs-background matte. ``landscape=True`` selects the 144x256 model meant for video frames.

    Not thread-safe: give each thread its own instance.
    """

    def __init__(self, landscape: bool = False):
        mp = _import_mediapipe()
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1 if landscape else 0)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """rgb ``(H, W, 3)`` uint8 -> matte ``(H, W)`` float32 in [0, 1] (1 = person)."""
        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        mask = self._seg.process(rgb).segmentation_mask
        return np.clip(np.asarray(mask, np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def foreground_matte(rgb: np.ndarray, landscape: bool | None = None) -> np.ndarray:
    """One-shot matte of an image or a full frame (wide frames use the landscape model)."""
    if landscape is None:
        landscape = rgb.shape[1] > 1.2 * rgb.shape[0]
    with Matting(landscape) as matting:
        return matting(rgb)
