"""Handing back the last avatar render while the head has not moved enough to show.

A participant who sits still still sends 25 camera frames a second, and the tracked, smoothed pose wanders
by a few 1e-4 rad between them (sensor noise through the face mesh and the One-Euro filter). Rendering each
of those costs the session a whole render for a change of a fraction of a pixel. ``RenderReuse`` hands the
last render back while the most any point of the avatar can have moved since (``camera.image_motion_bound``
over the avatar's ``content_radius``) stays under ``tolerance_px``. The pose it compares with is the one that
was rendered, not the previous frame's, so a slow turn cannot creep away from it unrendered. The render is
still placed anew each frame (where the head is, its roll and size), which costs little.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gramcast.camera import CAMERA_RADIUS, image_motion_bound

__all__ = ["RenderReuse"]


class RenderReuse:
    """The last render of one renderer, and whether it may stand for a render at a new pose.

    ``tolerance_px``: the most (an upper bound, in pixels of the render) any point of the avatar may have moved;
    0 renders every frame. A renderer without ``content_radius`` (a stand-in) is always asked again."""

    def __init__(self, tolerance_px: float = 0.5):
        if not tolerance_px >= 0.0:
            raise ValueError(f"tolerance_px must be 0 (render every frame) or more pixels, not {tolerance_px}")
        self.tolerance_px = float(tolerance_px)
        self._last: tuple[Any, tuple[float, float], int, np.ndarray] | None = None

    def lookup(self, renderer, yaw_pitch, resolution: int) -> np.ndarray | None:
        """The stored render where it was made by ``renderer`` at ``resolution`` and its pose is close enough
        to ``yaw_pitch``; else None (render, then ``store``)."""
        if self._last is None or self.tolerance_px <= 0.0:
            return None
        made_by, pose, res, image = self._last
        radius = getattr(renderer, "content_radius", None)
        if made_by is not renderer or res != int(resolution) or radius is None or not radius < CAMERA_RADIUS:
            return None
        moved = image_motion_bound(pose, yaw_pitch, res, radius)
        return image if moved <= self.tolerance_px else None

    @property
    def image(self) -> np.ndarray | None:
        """The stored render (what a reuse hands back), or None before the first."""
        return None if self._last is None else self._last[3]

    def store(self, renderer, yaw_pitch, resolution: int, image: np.ndarray) -> None:
        self._last = (renderer, (float(yaw_pitch[0]), float(yaw_pitch[1])), int(resolution), image)
