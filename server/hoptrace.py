"""Opt-in per-hop timing of frames through aiortc and the avatar pipeline (bench/stream.py --hops).

Frames are identified by the counter that bench/stream.py stamps into the camera frames' top rows
(``gramcast.server.synthetic.stamp_frame``); the avatar pipeline copies those rows into its output
(``SessionConfig.passthrough_rows``), so the same key can be read back at every step in either
process, from a decoded, converted or encoded frame alike. Each step records ``(key, event, t)``
with ``time.monotonic()``, a clock that all processes of this machine share, so the client's and
the server's events of one frame line up.

``enable(prefix)`` wraps, in this process only and for measurement only, three aiortc internals
(aiortc 1.16.0; nothing is changed in what they do):

- ``aiortc.jitterbuffer.JitterBuffer.add`` (video buffers): the arrival of a frame's first packet,
  and the moment the buffer hands the complete frame on (``<prefix>pkt``, ``<prefix>complete``);
- ``aiortc.codecs.vpx.Vp8Decoder.decode``, in the receiver's decoder thread (``<prefix>dec_start``,
  ``<prefix>dec_end``);
- ``aiortc.codecs.vpx.Vp8Encoder.encode``, in the sender's executor thread (``<prefix>enc_start``,
  ``<prefix>enc_end``).

Everything else is marked by its owner: the bench (camera send, receive), the avatar session
(``SessionConfig.trace``) and ``Yuv420Track``. Off by default: ``ENABLED`` is False and nothing is
wrapped, so the only cost is one flag test per frame.
"""
from __future__ import annotations

import threading
import time

import numpy as np

ENABLED = False
PREFIX = ""
#: (key, event, monotonic seconds), appended from any thread (list.append is atomic under the GIL).
EVENTS: list[tuple[int, str, float]] = []

_STAMP_BITS = 32
_STAMP_ROWS = 16
_installed: dict[str, object] = {}
_lock = threading.Lock()
_cache = threading.local()


def stamp_key(image) -> int | None:
    """The counter stamped into ``image`` (an av.VideoFrame in yuv420p/rgb24, or an (H, W[, 3]) array).

    Same decision rule as ``synthetic.read_stamp`` (block cores, 70-185 is "not a stamp"), vectorised
    and reading only the top rows (luma for yuv420p frames): tens of microseconds.
    """
    cached = getattr(_cache, "last", None)
    if cached is not None and cached[0] is image:  # several events of one frame in a row
        return cached[1]
    key = _read_key(image)
    _cache.last = (image, key)
    return key


def _read_key(image) -> int | None:
    rows = _top_rows(image)
    if rows is None:
        return None
    w = rows.shape[1]
    if w < _STAMP_BITS * 4 or rows.shape[0] < _STAMP_ROWS:
        return None
    core = rows[3:_STAMP_ROWS - 3]
    if w % _STAMP_BITS == 0:
        bw = w // _STAMP_BITS
        q = bw // 4
        blocks = core.reshape(core.shape[0], _STAMP_BITS, bw, *core.shape[2:])[:, :, q:bw - q]
        cores = blocks.mean(axis=tuple(a for a in range(blocks.ndim) if a != 1), dtype=np.float32)
    else:
        edges = [b * w // _STAMP_BITS for b in range(_STAMP_BITS + 1)]
        cores = np.array([core[:, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4].mean(dtype=np.float32)
                          for x0, x1 in zip(edges[:-1], edges[1:])], np.float32)
    if ((cores > 70) & (cores < 185)).any():
        return None
    return int(((cores >= 128).astype(np.int64) << np.arange(_STAMP_BITS)).sum())


def _top_rows(image) -> np.ndarray | None:
    """The top rows as (rows, W) luma or (rows, W, 3) RGB, without copying the frame."""
    if isinstance(image, np.ndarray):
        return image[:_STAMP_ROWS]
    fmt = getattr(getattr(image, "format", None), "name", None)
    if fmt not in ("yuv420p", "rgb24"):
        return None
    plane = image.planes[0]
    line = plane.line_size
    buf = np.frombuffer(plane, np.uint8, count=line * min(_STAMP_ROWS, image.height)).reshape(-1, line)
    if fmt == "yuv420p":
        return buf[:, :image.width]
    return buf[:, :image.width * 3].reshape(buf.shape[0], image.width, 3)


def mark(event: str, image, t: float | None = None) -> None:
    """Record ``event`` for the frame stamped in ``image`` (at ``t``, default now). No-op when off."""
    if not ENABLED:
        return
    t = time.monotonic() if t is None else t
    key = stamp_key(image)
    if key is not None:
        EVENTS.append((key, PREFIX + event, t))


def mark_key(event: str, key: int, t: float) -> None:
    if ENABLED:
        EVENTS.append((key, PREFIX + event, t))


def take() -> list[tuple[int, str, float]]:
    """All events recorded so far (and forget them)."""
    global EVENTS
    out, EVENTS = EVENTS, []
    return out


def enable(prefix: str = "") -> None:
    """Start recording, with event names prefixed by ``prefix`` (e.g. "s_" in the server process)."""
    global ENABLED, PREFIX
    from aiortc.codecs import vpx
    from aiortc.jitterbuffer import JitterBuffer

    from gramcast.server import aiortc_latency  # noqa: F401  its wrappers go in first, under ours

    with _lock:
        PREFIX = prefix
        ENABLED = True
        if _installed:
            return
        _installed.update(add=JitterBuffer.add, decode=vpx.Vp8Decoder.decode, encode=vpx.Vp8Encoder.encode)
        orig_add, orig_decode, orig_encode = _installed["add"], _installed["decode"], _installed["encode"]

        def add(self, packet):
            pli, frame = orig_add(self, packet)
            if ENABLED and self._is_video:
                now = time.monotonic()
                first = self.__dict__.setdefault("_hop_first", {})
                first.setdefault(packet.timestamp, now)
                if frame is not None:
                    frame._hop_first = first.pop(frame.timestamp, now)
                    frame._hop_complete = now
                    if len(first) > 64:  # frames that never completed
                        for ts in list(first)[:-8]:
                            first.pop(ts, None)
            return pli, frame

        def decode(self, encoded_frame):
            t0 = time.monotonic()
            frames = orig_decode(self, encoded_frame)
            t1 = time.monotonic()
            if ENABLED:
                for f in frames:
                    key = stamp_key(f)
                    if key is None:
                        continue
                    if hasattr(encoded_frame, "_hop_first"):
                        mark_key("pkt", key, encoded_frame._hop_first)
                        mark_key("complete", key, encoded_frame._hop_complete)
                    mark_key("dec_start", key, t0)
                    mark_key("dec_end", key, t1)
            return frames

        def encode(self, frame, force_keyframe=False):
            t0 = time.monotonic()
            out = orig_encode(self, frame, force_keyframe)
            t1 = time.monotonic()
            if ENABLED:
                key = stamp_key(frame)
                if key is not None:
                    mark_key("enc_start", key, t0)
                    mark_key("enc_end", key, t1)
            return out

        JitterBuffer.add = add
        vpx.Vp8Decoder.decode = decode
        vpx.Vp8Encoder.encode = encode


def disable() -> None:
    """Stop recording and restore aiortc's own methods."""
    global ENABLED
    from aiortc.codecs import vpx
    from aiortc.jitterbuffer import JitterBuffer

    with _lock:
        ENABLED = False
        if _installed:
            JitterBuffer.add = _installed.pop("add")
            vpx.Vp8Decoder.decode = _installed.pop("decode")
            vpx.Vp8Encoder.encode = _installed.pop("encode")


#: The hops bench/stream.py reports, in frame order: (name, from event, to event). "c_" events are
#: the bench process (publisher camera + encoder, subscriber receive), "s_" events the server.
HOPS: list[tuple[str, str, str]] = [
    ("client_encode", "c_cam_sent", "c_enc_end"),            # camera frame -> client encoder done
    ("uplink_send", "c_enc_end", "s_pkt"),                  # packetise, send, loopback, server receive
    ("server_jitter_wait", "s_pkt", "s_complete"),          # server jitter buffer holds the frame
    ("server_decode", "s_complete", "s_dec_end"),           # decoder queue + VP8 decode
    ("server_deliver", "s_dec_end", "s_recv"),              # decoder thread -> event loop -> session
    ("queue_before_tracking", "s_recv", "s_work_start"),    # waits for the tracker (one-slot wait + thread start)
    ("to_rgb", "s_work_start", "s_rgb"),                    # camera frame -> RGB array
    ("tracking", "s_rgb", "s_tracked"),
    ("queue_before_render", "s_tracked", "s_render_start"),  # a tracked frame waits for the renderer
    ("render", "s_render_start", "s_rendered"),
    ("compose", "s_rendered", "s_composed"),
    ("to_output_frame", "s_composed", "s_work_end"),        # passthrough rows + output VideoFrame
    ("publish", "s_work_end", "s_published"),               # worker thread -> event loop
    ("wait_for_sender", "s_published", "s_handed"),         # output track's recv() picks it up
    ("to_yuv420p", "s_handed", "s_yuv"),                    # server-side conversion (Yuv420Track)
    ("relay_to_encoder", "s_yuv", "s_enc_start"),           # relay + sender + executor queue
    ("server_encode", "s_enc_start", "s_enc_end"),
    ("downlink_send", "s_enc_end", "c_pkt"),
    ("client_jitter_wait", "c_pkt", "c_complete"),
    ("client_decode", "c_complete", "c_dec_end"),
    ("client_deliver", "c_dec_end", "c_recv"),               # decoder thread -> event loop -> app
]


def breakdown(events: list[tuple[int, str, float]], keys: set[int] | None = None) -> dict:
    """Median / p90 of each hop (ms) over the frames that reached the subscriber (have ``c_recv``)."""
    by_key: dict[int, dict[str, float]] = {}
    for key, name, t in events:
        if keys is not None and key not in keys:
            continue
        by_key.setdefault(key, {}).setdefault(name, t)  # first occurrence wins
    frames = [ev for ev in by_key.values() if "c_recv" in ev and "c_cam_sent" in ev]
    out: dict = {"frames": len(frames), "hops_ms": {}}
    for name, a, b in HOPS:
        vals = [1e3 * (ev[b] - ev[a]) for ev in frames if a in ev and b in ev]
        if vals:
            out["hops_ms"][name] = {"median": round(float(np.median(vals)), 2),
                                    "p90": round(float(np.percentile(vals, 90)), 2), "n": len(vals)}
    total = [1e3 * (ev["c_recv"] - ev["c_cam_sent"]) for ev in frames]
    if total:
        out["total_ms"] = {"median": round(float(np.median(total)), 2),
                           "p90": round(float(np.percentile(total, 90)), 2), "n": len(total)}
        out["sum_of_hop_medians_ms"] = round(sum(h["median"] for h in out["hops_ms"].values()), 2)
    return out
