"""Streaming on localhost: glass-to-glass latency, output fps, concurrent sessions at 25 fps.

The server (real avatar pipeline: tracking, cached render at 256², placement, VP8) runs in a child
process; each session is a publisher whose camera plays a real person's head (re-rendered along a
yaw sweep) with a frame counter stamped into the top rows, and a subscriber in the same room. The
pipeline copies those rows into its output, so the subscriber knows which camera frame each
received avatar frame came from: latency = received time - the time that camera frame was sent.
Everything shares this machine's cores with the server, as a real deployment would not: the
figures are a lower bound on capacity.

    python bench/stream.py [--seconds 15] [--max-sessions 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

from _report import emit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"bench-stream-secret-0123456789"


def _serve(port_queue, avatar_path: str, avatar_size: int) -> None:
    from gramcast.avatar import Avatar
    from gramcast.server.app import GramcastServer, ServerConfig
    from gramcast.session import AvatarSession, SessionConfig

    def pipeline(avatar):
        return AvatarSession(avatar, SessionConfig(output_size="480p", avatar_resolution=avatar_size,
                                                   passthrough_rows=16, max_fps=30))

    async def main():
        server = GramcastServer({"a": Avatar.load(avatar_path)},
                                ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"],
                                             pipeline_factory=pipeline, max_participants_per_room=4))
        await server.start()
        port_queue.put(server.config.port)
        await server.run_until_signal()

    asyncio.run(main())


def camera_frames(n: int) -> list[np.ndarray]:
    import gramcast
    from gramcast.compositing import place_rgba
    from gramcast.server.synthetic import stamp_frame

    person = gramcast.enroll(ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg")
    renderer = gramcast.Renderer(person)
    base = []
    for k in range(25):
        yaw = 0.35 * np.sin(2 * np.pi * k / 25)
        rgb, alpha = renderer.render_rgba((yaw, 0.0), 256)
        m = np.array([[1.1, 0, 320 - 141], [0, 1.1, 250 - 141]])
        base.append(place_rgba(np.full((480, 640, 3), 110, np.uint8), rgb, alpha, m))
    return [stamp_frame(base[i % len(base)], i) for i in range(n)]


async def run_sessions(port: int, sessions: int, seconds: float, frames) -> dict:
    from gramcast.server.client import GramcastClient
    from gramcast.server.synthetic import ArrayVideoTrack, read_stamp
    from gramcast.server.tokens import mint_token

    url = f"ws://127.0.0.1:{port}/ws"
    clients, tracks = [], []
    for s in range(sessions):
        room = f"bench{s}-{time.monotonic_ns()}"
        pub = GramcastClient(url, mint_token(SECRET, room, "pub"), room)
        sub = GramcastClient(url, mint_token(SECRET, room, "sub"), room)
        await pub.connect()
        await sub.connect()
        cam = ArrayVideoTrack(frames, fps=25, loop=False)
        await pub.publish(cam)
        video, _ = await sub.subscribe(await sub.wait_for_peer(timeout=30), timeout=30)
        clients += [pub, sub]
        tracks.append((cam, video))

    async def receive(cam, video):
        from gramcast.server.synthetic import VIDEO_CLOCK

        lat, times = [], []
        end = time.monotonic() + seconds
        warm = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                frame = await asyncio.wait_for(video.recv(), 5)
            except asyncio.TimeoutError:
                break
            now = time.monotonic()
            idx = read_stamp(frame.to_ndarray(format="rgb24"))
            if now < warm or idx is None:
                continue
            sent = cam.sent_at.get(int(idx * VIDEO_CLOCK / cam.fps))
            times.append(now)
            if sent is not None:
                lat.append((now - sent) * 1e3)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0
        return {"fps": fps, "latency_ms_median": statistics.median(lat) if lat else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None}

    try:
        per = await asyncio.gather(*(receive(c, v) for c, v in tracks))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"sessions": sessions, "per_session": per,
            "min_fps": min(p["fps"] for p in per),
            "latency_ms_median": statistics.median([p["latency_ms_median"] for p in per if p["latency_ms_median"]] or [0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--avatar-size", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import tempfile

    import gramcast

    tmp = Path(tempfile.mkdtemp())
    gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png").save(tmp / "a.gca")
    frames = camera_frames(int(25 * (args.seconds + 10)))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=_serve, args=(q, str(tmp / "a.gca"), args.avatar_size), daemon=True)
    server.start()
    port = q.get(timeout=120)
    results = {"cpu_cores": os.cpu_count(), "avatar_size": args.avatar_size, "camera_fps": 25, "runs": []}
    try:
        for n in range(1, args.max_sessions + 1):
            r = asyncio.run(run_sessions(port, n, args.seconds, frames))
            results["runs"].append(r)
            lat = r["latency_ms_median"]
            print(f"{n} session(s): min fps {r['min_fps']:5.1f}, median glass-to-glass {lat:6.1f} ms", flush=True)
            if r["min_fps"] < 20:
                break
    finally:
        server.terminate()
        server.join(10)
    ok = [r["sessions"] for r in results["runs"] if r["min_fps"] >= 24.0]
    results["sessions_at_25fps"] = max(ok) if ok else 0
    emit(results, args.json, indent=1)


if __name__ == "__main__":
    sys.exit(main())
