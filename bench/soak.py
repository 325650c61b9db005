"""Soak test of the server on localhost: two steady sessions while other peers keep joining and dropping.

Samples the process's resident memory and its number of asyncio tasks every few seconds and prints
the least-squares slope of each over the run (flat = no leak), plus JSON.

    python bench/soak.py [--minutes 10] [--json out.json]

The video pipeline is a pass-through of the camera (the server's own plumbing: signaling, peer
connections, relays, cleanup); the avatar renderer is measured by bench/render_cache.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.client import GramcastClient
from gramcast.server.synthetic import ArrayVideoTrack, PassThroughPipeline, SineAudioTrack
from gramcast.server.tokens import mint_token

SECRET = b"bench-soak-secret-0123456789ab"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def slope_per_minute(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(ts) / 60.0, np.asarray(ys), 1)[0])


async def soak(minutes: float, sample_s: float = 5.0) -> dict:
    server = GramcastServer({"default": object()}, ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"],
                                                               pipeline_factory=PassThroughPipeline))
    await server.start()
    url = f"ws://127.0.0.1:{server.config.port}/ws"
    frames = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8) for i in range(8)]

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

    async def churn():
        rng = random.Random(0)
        n = 0
        while True:
            room = rng.choice(["soak-a", "soak-b"])
            c = client(room, f"guest{n}")
            n += 1
            try:
                await c.connect()
                await c.publish(ArrayVideoTrack(frames[:2]))
                peer = next(p for p in c.peers if c.peers[p].get("publishing"))
                v, _ = await c.subscribe(peer)
                for _ in range(rng.randint(5, 30)):
                    await asyncio.wait_for(v.recv(), 5)
            except Exception:
                pass
            if rng.random() < 0.5:
                await c.close()                       # polite leave
            else:
                await c.ws.close()                    # vanishes: pcs dropped without a word
                for pc in c.pcs.values():
                    await pc.close()
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
    from collections import Counter

    live = Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())
    print("live tasks by coroutine:", dict(live.most_common(8)), flush=True)
    churner.cancel()
    for d in drains:
        d.cancel()
    for pub, sub, *_ in steady:
        await pub.close(); await sub.close()
    await server.stop()
    half = len(ts) // 2  # skip warm-up (allocator growth, first connections) in the slope
    return {"minutes": minutes, "guests_joined": churn.count, "video_frames_received": received["video"],
            "audio_frames_received": received["audio"],
            "rss_mb_first": mem[0] if mem else None, "rss_mb_last": mem[-1] if mem else None,
            "rss_slope_mb_per_min_second_half": slope_per_minute(ts[half:], mem[half:]),
            "tasks_slope_per_min_second_half": slope_per_minute(ts[half:], tasks[half:]),
            "tasks_first": tasks[0] if tasks else None, "tasks_last": tasks[-1] if tasks else None,
            "live_tasks_at_end": dict(live.most_common(8))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = asyncio.run(soak(args.minutes))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
