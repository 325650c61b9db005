"""The latency workarounds for aiortc (gramcast.server.aiortc_latency) and the per-hop tracer
(gramcast.server.hoptrace) that bench/stream.py uses to measure them.

Behaviour only: which frames come out of the jitter buffer after which packet, which encoder
settings are used, what the tracer reads and computes. The latency itself is measured by
bench/stream.py, not asserted here.
"""
import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import vpx
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtp import RtpPacket

from gramcast.server import aiortc_latency, hoptrace
from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient
from gramcast.server.synthetic import PassThroughPipeline, read_stamp, stamp_frame
from gramcast.server.tokens import mint_token

SECRET = b"latency-test-secret-0123456789-0"


def packet(seq, ts, marker=0, data=None):
    p = RtpPacket(payload_type=96, marker=marker, sequence_number=seq, timestamp=ts)
    p._data = data if data is not None else bytes([seq % 256])  # what the receiver's depayload sets
    return p


def feed(buffer, packets):
    """The frame (data, timestamp) each add() released, or None, in order."""
    out = []
    for p in packets:
        _, frame = buffer.add(p)
        out.append(None if frame is None else (frame.data, frame.timestamp))
    return out


@pytest.fixture
def stock_aiortc():
    aiortc_latency.uninstall()
    yield
    aiortc_latency.install()


# Two video frames of two packets each, the last packet of each with the marker bit.
TWO_FRAMES = [packet(10, 1000), packet(11, 1000, marker=1), packet(12, 4000), packet(13, 4000, marker=1)]


def test_video_frame_leaves_the_jitter_buffer_with_its_marker_packet():
    aiortc_latency.install()
    out = feed(JitterBuffer(capacity=128, is_video=True), TWO_FRAMES)
    assert out == [None, (b"\x0a\x0b", 1000), None, (b"\x0c\x0d", 4000)]


def test_stock_aiortc_holds_each_frame_until_the_next_one_starts(stock_aiortc):
    out = feed(JitterBuffer(capacity=128, is_video=True), TWO_FRAMES)
    assert out == [None, None, (b"\x0a\x0b", 1000), None]      # the second frame is still held


def test_a_frame_with_a_missing_packet_waits_for_it():
    aiortc_latency.install()
    buf = JitterBuffer(capacity=128, is_video=True)
    # packet 11 of the first frame arrives late: nothing before it, then the whole frame in order
    out = feed(buf, [packet(10, 1000), packet(12, 1000, marker=1), packet(11, 1000),
                     packet(13, 4000, marker=1)])
    assert out == [None, None, (b"\x0a\x0b\x0c", 1000), (b"\x0d", 4000)]


def test_padding_after_a_released_frame_is_not_handed_on_as_a_frame():
    aiortc_latency.install()
    padding = packet(12, 1000, data=b"")   # no payload, the previous frame's timestamp
    out = feed(JitterBuffer(capacity=128, is_video=True),
               [packet(10, 1000), packet(11, 1000, marker=1), padding, packet(13, 4000, marker=1)])
    assert out == [None, (b"\x0a\x0b", 1000), None, (b"\x0d", 4000)]


def test_without_marker_bits_the_buffer_behaves_as_aiortc_does(stock_aiortc):
    no_markers = [packet(s, 1000 + 3000 * (s // 3)) for s in range(3, 12)]
    stock = feed(JitterBuffer(capacity=128, is_video=True), no_markers)
    aiortc_latency.install()
    assert feed(JitterBuffer(capacity=128, is_video=True), no_markers) == stock
    assert sum(f is not None for f in stock) == 2


def test_audio_buffers_are_untouched(stock_aiortc):
    # audio: prefetch, one packet per frame, marker = start of talkspurt
    audio = [packet(s, 960 * s, marker=int(s % 5 == 0)) for s in range(20)]
    stock = feed(JitterBuffer(capacity=16, prefetch=4), audio)
    aiortc_latency.install()
    assert feed(JitterBuffer(capacity=16, prefetch=4), audio) == stock


def yuv_frame(rgb, pts=0):
    import cv2

    frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    frame.pts, frame.time_base = pts, fractions.Fraction(1, 90000)
    return frame


def test_vp8_encoder_opens_without_the_denoiser_and_decodes():
    aiortc_latency.install()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    encoder, decoder = vpx.Vp8Encoder(), vpx.Vp8Decoder()
    decoded = []
    for i in range(3):
        payloads, timestamp = encoder.encode(yuv_frame(stamp_frame(base, i), pts=3000 * i))
        assert encoder.codec is encoder.gramcast_codec       # aiortc kept the codec we opened
        assert encoder.gramcast_options["noise-sensitivity"] == "0"
        assert encoder.gramcast_options["deadline"] == "realtime"            # the rest is aiortc's
        data = b"".join(vpx.vp8_depayload(p) for p in payloads)
        from aiortc.jitterbuffer import JitterFrame

        decoded += decoder.decode(JitterFrame(data, timestamp))
    assert [read_stamp(f.to_ndarray(format="rgb24")) for f in decoded] == [0, 1, 2]
    # a new size reopens the codec, still with our settings
    encoder.encode(yuv_frame(np.zeros((120, 160, 3), np.uint8)))
    assert (encoder.codec.width, encoder.codec.height) == (160, 120)
    assert encoder.codec is encoder.gramcast_codec


def test_stock_vp8_encoder_opens_its_own_codec(stock_aiortc):
    encoder = vpx.Vp8Encoder()
    encoder.encode(yuv_frame(np.zeros((120, 160, 3), np.uint8)))
    assert encoder.codec is not None and not hasattr(encoder, "gramcast_codec")


def test_stamp_key_reads_what_read_stamp_reads_in_every_form():
    rng = np.random.default_rng(2)
    base = rng.integers(60, 200, (96, 160, 3), dtype=np.uint8)
    for counter in (0, 1, 0x12345, (7 << 16) | 600, 0xFFFFFFFF):
        rgb = stamp_frame(base, counter)
        assert read_stamp(rgb) == counter
        assert hoptrace.stamp_key(rgb) == counter
        assert hoptrace.stamp_key(av.VideoFrame.from_ndarray(rgb, format="rgb24")) == counter
        assert hoptrace.stamp_key(yuv_frame(rgb)) == counter
    assert hoptrace.stamp_key(base) is None and read_stamp(base) is None


def test_breakdown_takes_medians_per_hop_over_frames_that_arrived():
    events = []
    for key, shift in ((1, 0.0), (2, 0.010), (3, 0.030)):
        t = 100.0 + key
        events += [(key, "c_cam_sent", t), (key, "c_enc_end", t + 0.002), (key, "s_pkt", t + 0.003 + shift),
                   (key, "c_recv", t + 0.050 + shift)]
    events.append((4, "c_cam_sent", 200.0))   # never arrived: not counted
    out = hoptrace.breakdown(events)
    assert out["frames"] == 3
    assert out["hops_ms"]["client_encode"]["median"] == pytest.approx(2.0)
    assert out["hops_ms"]["uplink_send"]["median"] == pytest.approx(11.0)
    assert out["total_ms"]["median"] == pytest.approx(60.0)
    assert hoptrace.breakdown(events, keys={1})["total_ms"]["median"] == pytest.approx(50.0)


class PausingCamera(VideoStreamTrack):
    """Stamped frames at 30 fps until ``pause`` is set; then it sends nothing more (a frozen camera)."""

    def __init__(self, base):
        super().__init__()
        self.base, self.index, self.pause = base, 0, asyncio.Event()
        self.last_sent = None

    async def recv(self):
        if self.pause.is_set():
            await asyncio.Event().wait()       # never returns: no next frame
        await asyncio.sleep(1 / 30)
        frame = av.VideoFrame.from_ndarray(stamp_frame(self.base, self.index), format="rgb24")
        frame.pts, frame.time_base = self.index * 3000, fractions.Fraction(1, 90000)
        self.last_sent = self.index
        self.index += 1
        return frame


async def test_the_last_frame_before_a_pause_reaches_the_subscriber():
    """With aiortc's own jitter buffer the last frame would wait, at the server and again at the
    subscriber, for a next frame that never comes."""
    aiortc_latency.install()
    cfg = ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"], pipeline_factory=PassThroughPipeline)
    server = GramcastServer({"default": object()}, cfg)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    try:
        async with GramcastClient(url, mint_token(SECRET, "r", "a"), "r") as a, \
                GramcastClient(url, mint_token(SECRET, "r", "b"), "r") as b:
            cam = PausingCamera(np.random.default_rng(3).integers(60, 200, (120, 160, 3), dtype=np.uint8))
            await a.publish(cam)
            video, _ = await b.subscribe(await b.wait_for_peer())
            for _ in range(5):   # the stream is flowing
                await asyncio.wait_for(video.recv(), 10)
            cam.pause.set()
            await asyncio.sleep(0.3)   # whatever was in flight has been sent
            last = cam.last_sent
            seen = None
            while seen != last:
                frame = await asyncio.wait_for(video.recv(), 5)   # times out with stock aiortc
                seen = read_stamp(frame.to_ndarray(format="rgb24"))
                assert seen is not None and seen <= last
    finally:
        await server.stop()


def test_tracing_survives_switching_the_workarounds_off_and_on():
    base = np.random.default_rng(4).integers(60, 200, (96, 160, 3), dtype=np.uint8)
    hoptrace.enable("t_")
    try:
        hoptrace.take()
        for i, on in enumerate((False, True)):
            (aiortc_latency.install if on else aiortc_latency.uninstall)()
            encoder = vpx.Vp8Encoder()
            encoder.encode(yuv_frame(stamp_frame(base, 100 + i)))
            assert hasattr(encoder, "gramcast_codec") == on
        events = hoptrace.take()
    finally:
        hoptrace.disable()
        aiortc_latency.install()
    assert sorted((k, name) for k, name, _ in events) == [
        (100, "t_enc_end"), (100, "t_enc_start"), (101, "t_enc_end"), (101, "t_enc_start")]


@pytest.mark.parametrize("workaround", [True, False])
def test_the_encoder_reports_its_time_through_the_frame(workaround):
    """A session's frames carry its record_encode hook; the VP8 encoder calls it, relay or not."""
    from gramcast.session import output_video_frame

    if workaround:
        aiortc_latency.install()
    else:
        aiortc_latency.uninstall()
    try:
        reported = []
        frame = output_video_frame(np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8))
        frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
        frame.opaque = reported.append
        payloads, _ = vpx.Vp8Encoder().encode(frame)
        assert payloads and len(reported) == 1 and reported[0] > 0
        plain = yuv_frame(np.zeros((120, 160, 3), np.uint8))       # no hook: nothing to call, no error
        assert vpx.Vp8Encoder().encode(plain)[0]
    finally:
        aiortc_latency.install()
