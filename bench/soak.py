"""Soak test of the server on localhost: two steady sessions while other peers keep joining and dropping.

Samples the process's resident memory and its number of asyncio tasks every few seconds and prints
the least-squares slope of each over the run (flat = no leak), plus JSON.

    python bench/soak.py [--minutes 10] [--quick-leave 0.3] [--avatar-pipeline] [--json out.json]

At the end the churn stops (the guest in progress finishes its visit), the rooms go back to the two
steady sessions, and after a short settle the live asyncio tasks, RTCPeerConnection and aioice
Connection objects are compared with a baseline taken before the churn began: whatever is left over
("leaked_*") is what the departed guests left behind, independent of when the samples fell.

The video pipeline is a pass-through of the camera (the server's own plumbing: signaling, peer
connections, relays, cleanup), or with ``--avatar-pipeline`` the product's (camera frames with a face,
tracked, rendered and placed per participant: what each session holds besides the plumbing).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from pathlib import Path

from _report import emit

from collections import Counter

import numpy as np

from gramcast.server import ice
from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient
from gramcast.server.synthetic import ArrayVideoTrack, PassThroughPipeline, SineAudioTrack
from gramcast.server.tokens import mint_token

SECRET = b"bench-soak-secret-0123456789ab-0"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def live_rtc_objects() -> dict:
    """Live RTCPeerConnection and aioice Connection objects (after a collection)."""
    import aioice.ice
    from aiortc import RTCPeerConnection

    gc.collect()
    objs = gc.get_objects()
    return {"peer_connections": sum(issubclass(type(o), RTCPeerConnection) for o in objs),
            "ice_connections": sum(issubclass(type(o), aioice.ice.Connection) for o in objs)}


def slope_per_minute(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(ts) / 60.0, np.asarray(ys), 1)[0])


def task_counts() -> "Counter[str]":
    return Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())


def face_frames(n: int = 8) -> list[np.ndarray]:
    """320x240 camera frames with the sample portrait's face, moving a little from frame to frame."""
    import cv2

    from gramcast.images import load_image
    from gramcast.cli.demo_cmd import SAMPLE_PORTRAIT

    face = cv2.resize(load_image(SAMPLE_PORTRAIT), (180, 180), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        frame = np.full((240, 320, 3), 70, np.uint8)
        x = 60 + 4 * i
        frame[30:210, x:x + 180] = face
        frames.append(frame)
    return frames


async def soak(minutes: float, sample_s: float = 5.0, quick_leave: float = 0.0, settle_s: float = 3.0,
               avatar_pipeline: bool = False) -> dict:
    if avatar_pipeline:     # the product's pipeline: head tracking, the cached renderer, placement
        import gramcast
        from gramcast.cli.demo_cmd import SAMPLE_PORTRAIT

        avatars, factory = {"default": gramcast.enroll(SAMPLE_PORTRAIT)}, None
        frames = face_frames()
    else:
        avatars, factory = {"default": object()}, PassThroughPipeline
        frames = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8) for i in range(8)]
    server = GramcastServer(avatars, ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"],
                                                  pipeline_factory=factory))
    await server.start()
    url = f"ws://127.0.0.1:{server.config.port}/ws"

    def client(room, name):
        return GramcastClient(url, mint_token(SECRET, room, name), room)

    steady = []
    for room in ("soak-a", "soak-b"):
        pub, sub = client(room, "cam"), client(room, "viewer")
        await pub.connect(); await sub.connect()
        await pub.publish(ArrayVideoTrack(frames), SineAudioTrack())
        video, audio = await sub.subscribe(pub.participant)
        steady.append((pub, sub, video, audio))

    received = {"video": 0, "audio": 0}

    async def drain(track, kind):
        try:
            while True:
                await track.recv()
                received[kind] += 1
        except Exception:
            pass

    drains = [asyncio.create_task(drain(v, "video")) for *_, v, _a in steady]
    drains += [asyncio.create_task(drain(a, "audio")) for *_, a in steady if a is not None]
    await asyncio.sleep(settle_s)
    baseline_tasks, baseline_objects = task_counts(), live_rtc_objects()
    stop = asyncio.Event()

    async def churn():
        rng = random.Random(0)
        quick = random.Random(1)  # separate, so that quick_leave=0 replays the same guests as before
        n = 0
        while not stop.is_set():
            room = rng.choice(["soak-a", "soak-b"])
            c = client(room, f"guest{n}")
            n += 1
            try:
                await c.connect()
                await c.publish(ArrayVideoTrack(frames[:2]))
                peer = next(p for p in c.peers if c.peers[p].get("publishing"))
                v, _ = await c.subscribe(peer)
                stay = rng.randint(5, 30)
                if quick_leave and quick.random() < quick_leave:
                    stay = 0  # leaves right after negotiating, while ICE/DTLS may still be coming up
                for _ in range(stay):
                    await asyncio.wait_for(v.recv(), 5)
            except Exception:
                pass
            if rng.random() < 0.5:
                await c.close()                       # polite leave
            else:
                await c.ws.close()                    # vanishes: pcs dropped without a word
                for pc in list(c.pcs.values()):       # (this process's client side closes them fully)
                    await ice.close_peer_connection(pc)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            churn.count = n

    churn.count = 0
    churner = asyncio.create_task(churn())
    t0 = time.monotonic()
    ts, mem, tasks = [], [], []
    while time.monotonic() - t0 < minutes * 60:
        await asyncio.sleep(sample_s)
        ts.append(time.monotonic() - t0)
        mem.append(rss_mb())
        tasks.append(len(asyncio.all_tasks()))
        print(f"t={ts[-1]:6.0f}s rss={mem[-1]:7.1f} MB tasks={tasks[-1]:4d} participants={server.rooms.participant_count()} "
              f"guests={churn.count} frames={received['video']}", flush=True)
    live = task_counts()
    print("live tasks by coroutine:", dict(live.most_common(8)), flush=True)
    stop.set()
    await churner
    for _ in range(100):
        if server.rooms.participant_count() == 4:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)
    rss_settled = rss_mb()
    settled_tasks, settled_objects = task_counts(), live_rtc_objects()
    leaked_tasks = settled_tasks - baseline_tasks
    leaked_objects = {k: settled_objects[k] - baseline_objects[k] for k in settled_objects}
    print(f"after the churn stopped and settled: participants={server.rooms.participant_count()} "
          f"tasks {sum(baseline_tasks.values())} -> {sum(settled_tasks.values())}, objects {baseline_objects} -> "
          f"{settled_objects}; leaked tasks: {dict(leaked_tasks.most_common(8))}", flush=True)
    for d in drains:
        d.cancel()
    for pub, sub, *_ in steady:
        await pub.close(); await sub.close()
    await server.stop()
    half = len(ts) // 2  # skip warm-up (allocator growth, first connections) in the slope
    return {"minutes": minutes, "pipeline": "avatar" if avatar_pipeline else "pass-through",
            "guests_joined": churn.count, "video_frames_received": received["video"],
            "audio_frames_received": received["audio"],
            "rss_mb_first": mem[0] if mem else None, "rss_mb_last": mem[-1] if mem else None,
            "rss_slope_mb_per_min_second_half": slope_per_minute(ts[half:], mem[half:]),
            "tasks_slope_per_min_second_half": slope_per_minute(ts[half:], tasks[half:]),
            "tasks_first": tasks[0] if tasks else None, "tasks_last": tasks[-1] if tasks else None,
            "live_tasks_at_end": dict(live.most_common(8)), "quick_leave": quick_leave,
            "rss_mb_settled": rss_settled,
            "tasks_baseline": sum(baseline_tasks.values()), "tasks_settled": sum(settled_tasks.values()),
            "leaked_tasks": sum(leaked_tasks.values()), "leaked_tasks_by_coroutine": dict(leaked_tasks.most_common(8)),
            "objects_baseline": baseline_objects, "objects_settled": settled_objects,
            "leaked_peer_connections": leaked_objects["peer_connections"],
            "leaked_ice_connections": leaked_objects["ice_connections"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--quick-leave", type=float, default=0.0, metavar="FRACTION",
                    help="fraction of guests that leave right after negotiating instead of after 5-30 frames")
    ap.add_argument("--avatar-pipeline", action="store_true",
                    help="every participant's camera goes through the product's avatar pipeline (the enrolled sample "
                         "portrait; tracking, rendering, placement) instead of a pass-through")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = asyncio.run(soak(args.minutes, quick_leave=args.quick_leave, avatar_pipeline=args.avatar_pipeline))
    emit(result, args.json, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
