"""Latency workarounds for aiortc 1.16.0, applied from our code (measured with bench/stream.py --hops).

Importing this module puts two thin wrappers in place of the aiortc methods named below; they
behave exactly as aiortc does until ``install()`` turns the workarounds on. gramcast.server.signaling
and gramcast.server.client (the server and the Python client) call ``install()`` when imported;
``uninstall()`` turns them off again (aiortc's own behaviour: tests and ``bench/stream.py
--baseline`` use it to compare). Switching a flag rather than swapping methods keeps any other
wrapper (gramcast.server.hoptrace's timing) in place either way.

Video frames held one frame interval in the receive jitter buffer (``release_frames_on_marker``)
    ``aiortc.jitterbuffer.JitterBuffer._remove_frame`` (aiortc/jitterbuffer.py, lines 63-98 in
    1.16.0) only recognises a frame as complete when a packet with the *next* RTP timestamp is in
    the buffer, so every received video frame waits for the first packet of the following frame
    before ``RTCRtpReceiver._handle_rtp_packet`` hands it to the decoder thread: one whole frame
    interval, 40 ms at 25 fps, on every hop that aiortc receives (camera -> server, and again avatar
    -> a Python client; when the avatar's frame rate drops, the second wait grows with its
    interval). Measured with ``bench/stream.py --compare --hops``
    (docs/bench/stream_hops_2core.json, ``baseline``): ``server_jitter_wait`` and
    ``client_jitter_wait`` were 37-42 ms each at one session (medians 39.9 ms each, of 130.6 ms
    glass-to-glass); with the workaround 0.1-0.3 ms. The RTP marker bit says "last packet of this
    frame" for video (RFC 3550 5.1; RFC 7741 4.1 for VP8, RFC 6184 5.1 for H264), and aiortc's own
    sender and browsers set it. The workaround keeps aiortc's rule and adds one: a video frame is
    also complete when its packets are contiguous from the buffer's origin up to one carrying the
    marker bit. Streams without marker bits (or a lost marker packet) fall back to aiortc's rule;
    padding-only packets (no payload), which aiortc would append to the frame before them, are
    skipped rather than handed on as an empty frame; audio buffers (prefetch, and a marker bit that
    means "start of talkspurt") are untouched. Upstream's ``_remove_frame`` has the same shape
    (github.com/aiortc/aiortc, src/aiortc/jitterbuffer.py).

VP8 encoder denoiser (``fast_vp8_encoder``)
    ``aiortc.codecs.vpx.Vp8Encoder.encode`` (aiortc/codecs/vpx.py, lines 180-237 in 1.16.0) opens
    libvpx with ``noise-sensitivity=4``, the strongest temporal denoiser, which filters every frame
    before coding it. Measured here on 640x480 frames (one thread, the setting aiortc picks for two
    cores): 2.8-3.2 ms per frame with it, 1.6-1.8 ms without, and a higher luma PSNR without on a
    synthetic clip (47 vs 54 dB; the denoiser blurs detail). The server encodes only the rendered
    avatar, which has no sensor noise to remove (a browser sending its camera uses its own encoder;
    the Python client, used with synthetic cameras, gets the same setting). The workaround opens the
    codec exactly as aiortc does (same size, bitrate, rate control, quantisers, threads) but with
    ``noise-sensitivity=0``; aiortc's encode then finds a codec already open and uses it. When
    aiortc would reopen the codec (frame size change, bitrate change over 10 %) the wrapper reopens
    it the same way first.
"""
from __future__ import annotations

import multiprocessing
import time

from aiortc.codecs import vpx
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

_original_remove_frame = JitterBuffer._remove_frame
_original_vp8_encode = vpx.Vp8Encoder.encode

#: libvpx options that differ from aiortc's (see above); everything else is aiortc's.
VP8_OPTION_OVERRIDES = {"noise-sensitivity": "0"}
_on = {"marker": False, "vp8": False}


def _remove_frame_on_marker(self: JitterBuffer, sequence_number: int):
    if not _on["marker"] or not self._is_video or self._prefetch:
        return _original_remove_frame(self, sequence_number)
    while True:
        packets: list = []
        timestamp = None
        end = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                end = count  # the next frame began before a marker bit was seen: aiortc's own rule
                break
            packets.append(packet)
            if packet.marker:  # the frame's last packet, and all before it are here
                end = count + 1
                break
        if end is None:
            return None
        self.remove(end)
        data = b"".join(p._data for p in packets)
        if data:
            return JitterFrame(data=data, timestamp=timestamp)
        # Only padding (packets without payload, e.g. bandwidth probes sent after a frame with its
        # timestamp): nothing to decode, and an empty packet would drain the decoder. Go on.


_remove_frame_on_marker.gramcast_fix = True  # type: ignore[attr-defined]


def _open_vp8(encoder: vpx.Vp8Encoder, frame):
    """aiortc 1.16.0's VP8 codec setup (vpx.py, Vp8Encoder.encode), with VP8_OPTION_OVERRIDES."""
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width = frame.width
    codec.height = frame.height
    codec.bit_rate = encoder.target_bitrate
    codec.pix_fmt = "yuv420p"
    codec.gop_size = 3000
    codec.qmin = 2
    codec.qmax = 56
    bitrate = str(encoder.target_bitrate)
    options = {
        "bufsize": bitrate, "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
        "minrate": bitrate, "maxrate": bitrate, "noise-sensitivity": "4", "overshoot-pct": "15",
        "partitions": "0", "static-thresh": "1", "undershoot-pct": "100",
        **VP8_OPTION_OVERRIDES,
    }
    codec.options = options  # libavcodec consumes these when it opens the codec: keep a copy
    codec.thread_count = vpx.number_of_threads(frame.width * frame.height, multiprocessing.cpu_count())
    encoder.gramcast_codec, encoder.gramcast_options = codec, options
    return codec


def _vp8_encode_fast(self: vpx.Vp8Encoder, frame, force_keyframe: bool = False):
    t0 = time.perf_counter()
    try:
        return _vp8_encode(self, frame, force_keyframe)
    finally:
        # A frame from an AvatarSession carries its record_encode hook: the session's encode_ms stat.
        report = getattr(frame, "opaque", None)
        if callable(report):
            report((time.perf_counter() - t0) * 1000.0)


def _vp8_encode(self: vpx.Vp8Encoder, frame, force_keyframe: bool):
    if not _on["vp8"]:
        return _original_vp8_encode(self, frame, force_keyframe)
    codec = self.codec
    if codec is not None and (
        frame.width != codec.width or frame.height != codec.height
        or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > 0.1
    ):
        codec = None  # aiortc would reopen it: do so ourselves, the same way
    if codec is None:
        self.codec = _open_vp8(self, frame)
    return _original_vp8_encode(self, frame, force_keyframe)


_vp8_encode_fast.gramcast_fix = True  # type: ignore[attr-defined]


def release_frames_on_marker(on: bool = True) -> None:
    _on["marker"] = on


def fast_vp8_encoder(on: bool = True) -> None:
    _on["vp8"] = on


def install() -> None:
    """Turn both workarounds on (see the module docstring). Idempotent."""
    release_frames_on_marker(True)
    fast_vp8_encoder(True)


def uninstall() -> None:
    """Turn both off: aiortc's own jitter buffer and VP8 encoder setup."""
    release_frames_on_marker(False)
    fast_vp8_encoder(False)


def installed() -> bool:
    return _on["marker"] and _on["vp8"]


# The wrappers go in once, at import (before any other wrapper, e.g. hoptrace's, which imports this
# module first); the flags above decide what they do.
if not getattr(JitterBuffer._remove_frame, "gramcast_fix", False):
    JitterBuffer._remove_frame = _remove_frame_on_marker
if not getattr(vpx.Vp8Encoder.encode, "gramcast_fix", False):
    vpx.Vp8Encoder.encode = _vp8_encode_fast
