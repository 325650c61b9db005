"""The aiortc track an AvatarSession sends (kept apart so ``gramcast.session`` imports without aiortc)."""
from __future__ import annotations

from aiortc.mediastreams import MediaStreamTrack


class AvatarVideoTrack(MediaStreamTrack):
    """Yields the session's newest avatar frame each time the sender (or a relay) asks for one.

    Encode time is not measured here: with a relay in between, recv() is called by the relay, not by
    the encoder. Each frame carries the session's ``record_encode`` in ``frame.opaque`` instead, which
    the VP8 encoder wrapper of ``gramcast.server.aiortc_latency`` calls with its encode time.
    """

    kind = "video"

    def __init__(self, session):
        super().__init__()
        self._session = session

    async def recv(self):
        return await self._session.next_frame()

    def stop(self) -> None:
        super().stop()
        self._session._output_stopped()
