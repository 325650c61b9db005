"""The aiortc track an AvatarSession sends (kept apart so ``gramcast.session`` imports without aiortc)."""
from __future__ import annotations

import time

from aiortc.mediastreams import MediaStreamTrack


class AvatarVideoTrack(MediaStreamTrack):
    """Yields the session's newest avatar frame each time the sender asks for one."""

    kind = "video"

    def __init__(self, session):
        super().__init__()
        self._session = session
        self._handed_at: float | None = None

    async def recv(self):
        # aiortc's sender encodes and sends a frame between two recv() calls, so that gap
        # measures encode + packetise time on the sending side.
        if self._handed_at is not None:
            self._session.record_encode((time.monotonic() - self._handed_at) * 1000.0)
        frame = await self._session.next_frame()
        self._handed_at = time.monotonic()
        return frame
