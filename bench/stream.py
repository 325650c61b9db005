"""Streaming on localhost: glass-to-glass latency, output fps, concurrent sessions at 25 fps.

The server (real avatar pipeline: tracking, cached render at 256², placement, VP8) runs in a child
process; each session is a publisher whose camera plays a real person's head (re-rendered along a
yaw sweep) with a frame counter stamped into the top rows, and a subscriber in the same room. The
pipeline copies those rows into its output, so the subscriber knows which camera frame each
received avatar frame came from: latency = received time - the time that camera frame was sent.
Everything shares this machine's cores with the server, as a real deployment would not: the
figures are a lower bound on capacity.

The camera hands out yuv420p frames, as a camera or browser does (``--camera-format rgb24`` makes
the client's encoder convert them, as this bench did before). ``--hops FILE`` also times every hop
of every frame (client encode, jitter buffers, decode, queueing, tracking, render, conversions,
encode; see gramcast.server.hoptrace) and writes the medians per run. ``--baseline`` measures the
transport as it was before the latency work (aiortc's own jitter buffer and VP8 settings, rgb24
session output and camera; the session's scheduling and compositing stay current); ``--compare``
measures both, alternating, so that a machine whose load varies affects both alike;
``--compare-pipeline`` does the same for sessions that track and render each frame in turn
against ones that track the next frame while one renders (``SessionConfig(pipeline=False / True)``;
the default, None, pipelines only a GPU renderer). Each run also
reports the cores the server and the bench's clients used and the load average: other work on the
machine slows every hop that needs a core.

    python bench/stream.py [--seconds 15] [--max-sessions 4] [--avatar me.gca] [--json out.json] [--hops hops.json]
    python bench/stream.py --compare --max-sessions 3 --json docs/bench/stream_2core.json \\
        --hops docs/bench/stream_hops_2core.json
    python bench/stream.py --compare-edges --max-sessions 3     # occlusion-edge search on / off
    python bench/stream.py --compare-reuse --still --max-sessions 4    # a still head: last render reused / not
    python bench/stream.py --compare-resolution --avatar FILE.gca      # smaller renders while behind / never
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

from _report import emit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"bench-stream-secret-0123456789-0"

#: What each measured variant changes in the sessions' ``SessionConfig`` ("current": nothing, the defaults).
VARIANT_SESSION = {"unpipelined": {"pipeline": False}, "pipelined": {"pipeline": True},
                   "no-edges": {"edge_samples": 0}, "edges": {"edge_samples": 12},
                   "every-frame": {"reuse_render_px": 0.0, "still_px": 0.0}, "fixed-size": {"resolution_steps": ()}}
#: --compare-* options: the variants they run side by side, alternating, and what they measure.
COMPARISONS = {
    "compare_pipeline": (["unpipelined", "pipelined"],
                         "sessions that track and render each frame in turn and ones that track the next frame "
                         "while one renders (SessionConfig(pipeline=False / True))"),
    "compare_edges": (["no-edges", "edges", "current"],
                      "sessions whose renderer never searches a mesh avatar's occlusion edges at full resolution "
                      "(SessionConfig(edge_samples=0)), always does (12) and does while the session keeps up "
                      "(None, the default)"),
    "compare_reuse": (["every-frame", "current"],
                      "sessions that track and render every frame (SessionConfig(reuse_render_px=0, still_px=0)) "
                      "and ones that keep the last pose and render while the head is still (the defaults)"),
    "compare_resolution": (["fixed-size", "current"],
                           "sessions that always render at --avatar-size (SessionConfig(resolution_steps=())) and "
                           "ones that render smaller while they fall behind (the default)"),
}


def _serve(port_queue, avatar_path: str, avatar_size: int, variant: str, hops_path: str | None,
           one_torch_thread: bool = False, server_options: dict | None = None) -> None:
    if one_torch_thread:                  # as `gramcast serve --one-torch-thread`, before any torch work
        from gramcast.torch_threads import use_one_torch_thread

        use_one_torch_thread()
    from gramcast.avatar import Avatar
    from gramcast.server import aiortc_latency, hoptrace
    from gramcast.server.app import GramcastServer, ServerConfig
    from gramcast.session import AvatarSession, SessionConfig

    baseline = variant == "baseline"
    if baseline:
        aiortc_latency.uninstall()
    if hops_path:
        hoptrace.enable("s_")

    def pipeline(avatar):
        return AvatarSession(avatar, SessionConfig(output_size="480p", avatar_resolution=avatar_size,
                                                   passthrough_rows=16, max_fps=30,
                                                   output_format="rgb24" if baseline else "yuv420p",
                                                   **VARIANT_SESSION.get(variant, {}),
                                                   trace=hoptrace.mark if hops_path else None))

    async def main():
        server = GramcastServer({"a": Avatar.load(avatar_path)},
                                ServerConfig(port=0, secret=SECRET, ice_addresses=["127.0.0.1"],
                                             pipeline_factory=pipeline, max_participants_per_room=4,
                                             **(server_options or {})))
        await server.start()
        port_queue.put(server.config.port)
        await server.run_until_signal()

    asyncio.run(main())
    if hops_path:
        Path(hops_path).write_text(json.dumps(hoptrace.take()))


class StampedFrames:
    """``n`` camera frames cycling through ``base``, frame i stamped with ``tag << 16 | i``, made on demand.

    The tag tells sessions (and runs) apart in the per-hop trace; making frames on demand keeps
    memory flat however many sessions run (a stamp costs a copy of one frame).
    """

    def __init__(self, base: list[np.ndarray], n: int, tag: int):
        if n >= 1 << 16:
            raise ValueError("at most 65535 frames per session")
        self.base, self.n, self.tag = base, n, tag

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        from gramcast.server.synthetic import stamp_frame

        return stamp_frame(self.base[i % len(self.base)], (self.tag << 16) | i)


def camera_frames(still: bool = False) -> list[np.ndarray]:
    """25 frames of a real person's head along a yaw sweep (unstamped); ``still``: the person's photo held
    still, with fresh sensor noise (sigma 3 levels) in each frame."""
    import gramcast
    from gramcast.compositing import place_rgba

    photo = ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg"
    if still:
        import cv2

        from gramcast.images import load_image

        rng = np.random.default_rng(0)
        frame = np.full((480, 640, 3), 110, np.float32)
        frame[40:440, 120:520] = cv2.resize(load_image(photo), (400, 400), interpolation=cv2.INTER_AREA)
        return [np.clip(frame + rng.normal(0.0, 3.0, frame.shape), 0, 255).astype(np.uint8) for _ in range(25)]
    person = gramcast.enroll(photo)
    renderer = gramcast.Renderer(person)
    base = []
    for k in range(25):
        yaw = 0.35 * np.sin(2 * np.pi * k / 25)
        rgb, alpha = renderer.render_rgba((yaw, 0.0), 256)
        m = np.array([[1.1, 0, 320 - 141], [0, 1.1, 250 - 141]])
        base.append(place_rgba(np.full((480, 640, 3), 110, np.uint8), rgb, alpha, m))
    return base


async def run_sessions(port: int, sessions: int, seconds: float, base, run: int,
                       camera_format: str = "yuv420p") -> dict:
    from gramcast.server import hoptrace
    from gramcast.server.client import GramcastClient
    from gramcast.server.synthetic import ArrayVideoTrack
    from gramcast.server.tokens import mint_token

    url = f"ws://127.0.0.1:{port}/ws"
    clients, tracks = [], []
    for s in range(sessions):
        room = f"bench{s}-{time.monotonic_ns()}"
        pub = GramcastClient(url, mint_token(SECRET, room, "pub"), room)
        sub = GramcastClient(url, mint_token(SECRET, room, "sub"), room)
        await pub.connect()
        await sub.connect()
        tag = run * 16 + s + 1
        cam = ArrayVideoTrack(StampedFrames(base, int(25 * (seconds + 10)), tag), fps=25, loop=False,
                              pixel_format=camera_format)
        cam.tag = tag
        await pub.publish(cam)
        video, _ = await sub.subscribe(await sub.wait_for_peer(timeout=30), timeout=30)
        clients += [pub, sub]
        tracks.append((cam, video))

    async def receive(cam, video):
        from gramcast.server.synthetic import VIDEO_CLOCK

        lat, times, keys = [], [], []
        end = time.monotonic() + seconds
        warm = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                frame = await asyncio.wait_for(video.recv(), 5)
            except asyncio.TimeoutError:
                break
            now = time.monotonic()
            key = hoptrace.stamp_key(frame)  # the counter, read from the luma rows
            if now < warm or key is None or key >> 16 != cam.tag:
                continue
            sent = cam.sent_at.get(int((key & 0xFFFF) * VIDEO_CLOCK / cam.fps))
            times.append(now)
            if sent is not None:
                lat.append((now - sent) * 1e3)
                keys.append(key)
                hoptrace.mark_key("recv", key, now)
                hoptrace.mark_key("cam_sent", key, sent)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0
        return {"fps": fps, "latency_ms_median": statistics.median(lat) if lat else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None, "_keys": keys,
                "_times": times}

    try:
        per = await asyncio.gather(*(receive(c, v) for c, v in tracks))
        for p, pub in zip(per, clients[::2]):
            # what the publisher's session ended at: quality level, render size, reused renders
            try:
                st = await pub.request_stats()
            except Exception:  # an older server, or one that is closing: the figures above stand
                continue
            p["session"] = {k: st.get(k) for k in ("quality_level", "render_resolution", "renders_reused",
                                                   "edge_search_offs", "frames_dropped")}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    keys = [p.pop("_keys") for p in per]
    times = [p.pop("_times") for p in per]
    return {"sessions": sessions, "per_session": per, "_keys": keys, "_times": times,
            "min_fps": min(p["fps"] for p in per),
            "latency_ms_median": statistics.median([p["latency_ms_median"] for p in per if p["latency_ms_median"]] or [0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--avatar-size", type=int, default=256)
    ap.add_argument("--one-torch-thread", action="store_true",
                    help="the server renders on one torch thread with all the cores (gramcast serve "
                         "--one-torch-thread; gramcast.torch_threads)")
    ap.add_argument("--avatar", type=Path, metavar="FILE.gca",
                    help="stream this avatar (default: the sample portrait enrolled with the mesh method)")
    ap.add_argument("--min-sessions", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--hops", type=Path, metavar="FILE",
                    help="also time each hop of each frame and write the per-run medians to FILE")
    ap.add_argument("--camera-format", choices=["yuv420p", "rgb24"], default="yuv420p",
                    help="pixel format the bench camera hands to the client's encoder")
    ap.add_argument("--baseline", action="store_true",
                    help="the transport as before the latency work: aiortc's own jitter buffer and "
                         "VP8 settings, rgb24 session output, rgb24 camera (the session's scheduling "
                         "and compositing are the current ones)")
    ap.add_argument("--compare", action="store_true",
                    help="measure --baseline and the current pipeline side by side: two servers, "
                         "each session count run on the baseline and then on the current one")
    for name, (_, what) in COMPARISONS.items():
        ap.add_argument("--" + name.replace("_", "-"), action="store_true",
                        help=f"measure {what} side by side, alternating")
    ap.add_argument("--still", action="store_true",
                    help="the cameras show a person holding still (a photo with fresh sensor noise each frame) "
                         "instead of a head turning to and fro")
    args = ap.parse_args()
    import tempfile

    import gramcast
    import gramcast.server.client  # noqa: F401  installs aiortc_latency: must precede uninstall / enable
    from gramcast.server import hoptrace

    compared = [v for name, (v, _) in COMPARISONS.items() if getattr(args, name)]
    variants = (["baseline", "current"] if args.compare else compared[0] if compared
                else ["baseline" if args.baseline else "current"])
    tmp = Path(tempfile.mkdtemp())
    if args.avatar is not None:
        avatar_file = str(args.avatar)
        gramcast.Avatar.load(avatar_file)                      # a clear error now, not in the server process
    else:
        avatar_file = str(tmp / "a.gca")
        gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png").save(avatar_file)
    base = camera_frames(still=args.still)
    if args.hops:
        hoptrace.enable("c_")
    ctx = mp.get_context("spawn")
    servers = {}
    for v in variants:
        q = ctx.Queue()
        proc = ctx.Process(target=_serve, daemon=True,
                           args=(q, avatar_file, args.avatar_size, v,
                                 str(tmp / f"server_hops_{v}.json") if args.hops else None,
                                 args.one_torch_thread))
        proc.start()
        servers[v] = (proc, q.get(timeout=180))
    out = {v: {"variant": v, "camera_format": "rgb24" if v == "baseline" else args.camera_format, "runs": []}
           for v in variants}
    keys = {v: [] for v in variants}
    load_before = os.getloadavg()
    run = 0
    try:
        for n in range(args.min_sessions, args.max_sessions + 1):
            for v in variants:
                proc, port = servers[v]
                _client_variant(v)
                cpu0, t0 = (_cpu_seconds(os.getpid()), _cpu_seconds(proc.pid)), time.monotonic()
                r = asyncio.run(run_sessions(port, n, args.seconds, base, run, out[v]["camera_format"]))
                run += 1
                wall = time.monotonic() - t0
                # cores busy on average over the run (connecting and closing included)
                r["cores_used"] = {"bench_clients": round((_cpu_seconds(os.getpid()) - cpu0[0]) / wall, 2),
                                   "server": round((_cpu_seconds(proc.pid) - cpu0[1]) / wall, 2)}
                r["load_average_1min"] = round(os.getloadavg()[0], 2)
                keys[v].append(r.pop("_keys"))
                r.pop("_times")
                out[v]["runs"].append(r)
                print(f"{v:8s} {n} session(s): min fps {r['min_fps']:5.1f}, median glass-to-glass "
                      f"{r['latency_ms_median']:6.1f} ms, cores used: server {r['cores_used']['server']:.2f}, "
                      f"bench clients {r['cores_used']['bench_clients']:.2f}, load average "
                      f"{r['load_average_1min']:.2f}", flush=True)
                ended = [p["session"] for p in r["per_session"] if "session" in p]
                if ended:
                    print("         sessions ended at: " + "; ".join(
                        f"level {e['quality_level']}, {e['render_resolution']} px, {e['renders_reused']} renders "
                        f"reused" for e in ended), flush=True)
            if out[variants[-1]]["runs"][-1]["min_fps"] < 20:
                break
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.join(30)
    _client_variant("current")
    for v in variants:
        ok = [r["sessions"] for r in out[v]["runs"] if r["min_fps"] >= 24.0]
        out[v]["sessions_at_25fps"] = max(ok) if ok else 0
    main_variant = variants[-1]
    streamed = gramcast.Avatar.load(avatar_file)
    results = {"cpu_cores": os.cpu_count(), "avatar_size": args.avatar_size, "camera_fps": 25,
               "camera": "still" if args.still else "yaw sweep",
               "one_torch_thread": args.one_torch_thread,
               "avatar": {"file": str(args.avatar) if args.avatar else "sample portrait, mesh method",
                          "method": streamed.meta.get("method"), "layers": streamed.num_layers},
               **out[main_variant], "load_average_before": load_before, "load_average_after": os.getloadavg()}
    for v in variants[:-1]:
        results[v] = out[v]
    if args.hops:
        events = hoptrace.take()
        for v in variants:
            path = tmp / f"server_hops_{v}.json"
            if path.exists():
                events += [tuple(e) for e in json.loads(path.read_text())]
            else:
                print(f"no per-hop events from the {v} server", file=sys.stderr)
        if os.environ.get("GRAMCAST_HOPS_RAW"):
            Path(os.environ["GRAMCAST_HOPS_RAW"]).write_text(json.dumps(events))
        hops = {"cpu_cores": os.cpu_count(), "avatar_size": args.avatar_size, "camera_fps": 25,
                "hops": [{"name": n, "from": a, "to": b} for n, a, b in hoptrace.HOPS]}
        for v in variants:
            runs = []
            for r, ks in zip(out[v]["runs"], keys[v]):
                per = [hoptrace.breakdown(events, set(k)) for k in ks]
                every = hoptrace.breakdown(events, {k for kk in ks for k in kk})
                runs.append({"sessions": r["sessions"], "min_fps": r["min_fps"],
                             "load_average_1min": r["load_average_1min"], "all_sessions": every,
                             "per_session_total_ms": [p.get("total_ms") for p in per]})
            hops[v] = {"variant": v, "camera_format": out[v]["camera_format"], "runs": runs}
        _print_hops(hops, variants)
        Path(args.hops).write_text(json.dumps(hops, indent=1))
    emit(results, args.json, indent=1)


def _client_variant(variant: str) -> None:
    """This process's aiortc as the variant's clients have it (the bench's clients are aiortc too)."""
    from gramcast.server import aiortc_latency

    if variant == "baseline":
        aiortc_latency.uninstall()
    else:
        aiortc_latency.install()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print_hops(hops: dict, variants: list[str]) -> None:
    cols = [(v, r) for r in range(max(len(hops[v]["runs"]) for v in variants)) for v in variants
            if r < len(hops[v]["runs"])]
    runs = [hops[v]["runs"][r] for v, r in cols]
    print(f"{'hop (median ms)':22s}" + "".join(f"{v[:4] + ' ' + str(r['sessions']) + 's':>10s}"
                                               for (v, _), r in zip(cols, runs)))
    for h in hops["hops"]:
        cells = [r["all_sessions"]["hops_ms"].get(h["name"], {}).get("median") for r in runs]
        print(f"{h['name']:22s}" + "".join(f"{c:10.1f}" if c is not None else f"{'-':>10s}" for c in cells))
    for label, key in (("sum of hop medians", "sum_of_hop_medians_ms"), ("glass-to-glass", "total_ms")):
        cells = [r["all_sessions"].get(key) for r in runs]
        cells = [c["median"] if isinstance(c, dict) else c for c in cells]
        print(f"{label:22s}" + "".join(f"{c:10.1f}" if c is not None else f"{'-':>10s}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
