"""What turns a camera frame into an avatar frame inside an ``AvatarSession``.

A ``FrameProcessor`` does a frame in one call; a ``TwoStageFrameProcessor`` also exposes its two halves
(track, draw), which the session can run in two threads so that one frame's tracking overlaps the
previous frame's render. ``gramcast.compositing.AvatarFrameProcessor`` is the product's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["FrameProcessor", "TwoStageFrameProcessor", "is_two_stage", "as_two_stage", "TrackedFrame"]


class FrameProcessor(Protocol):
    """Turns one camera frame into one output frame (runs in a worker thread)."""

    def process(self, rgb: np.ndarray, timestamp: float) -> tuple[np.ndarray, dict[str, Any]]:
        """rgb: (H, W, 3) uint8. Returns the output (H', W', 3) uint8 and timings/flags
        (``tracking_ms``, ``render_ms``, ``compose_ms``, ``face_found``; ``tracking_still`` / ``render_reused``
        where the frame took the last tracked pose / the last render, and reports no time for that step)."""

    def set_avatar(self, avatar) -> None: ...


class TwoStageFrameProcessor(FrameProcessor, Protocol):
    """A processor the session can pipeline: ``draw(rgb, track(rgb, t)[0])`` is ``process(rgb, t)``.

    ``track`` runs in the tracking thread, one frame at a time and in camera order; ``draw`` in the
    render thread, where the processor was also made, so that all of its torch work stays on one
    thread (see ``gramcast.torch_threads``)."""

    def track(self, rgb: np.ndarray, timestamp: float) -> tuple[Any, dict[str, Any]]:
        """The head in ``rgb`` and ``tracking_ms``/``face_found``."""

    def draw(self, rgb: np.ndarray, tracked: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """The output frame for a tracked head and ``render_ms``/``compose_ms``."""


def is_two_stage(processor) -> bool:
    return callable(getattr(processor, "track", None)) and callable(getattr(processor, "draw", None))


def as_two_stage(processor: FrameProcessor) -> TwoStageFrameProcessor:
    """``processor`` itself where it has both halves, else it wrapped as one whose tracking does nothing."""
    return processor if is_two_stage(processor) else _WholeFrame(processor)


class _WholeFrame:
    """A processor with only ``process`` as a two-stage one whose tracking does nothing."""

    def __init__(self, processor: FrameProcessor):
        self.processor = processor

    def track(self, rgb: np.ndarray, timestamp: float) -> tuple[float, dict[str, Any]]:
        return timestamp, {}

    def draw(self, rgb: np.ndarray, timestamp: float) -> tuple[np.ndarray, dict[str, Any]]:
        return self.processor.process(rgb, timestamp)


@dataclass
class TrackedFrame:
    """A camera frame between the two stages (``AvatarSession`` makes them)."""

    frame: Any
    arrived: float
    rgb: np.ndarray
    head: Any
    info: dict[str, Any]
    times: tuple[float, float, float]    # stage start, RGB array ready, tracked (monotonic)
