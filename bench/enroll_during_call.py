"""What enrolling a selfie costs the calls in progress on the same server.

The server (real avatar sessions, as in bench/stream.py: tracking, cached render, placement, VP8) runs in
a child process; ``--sessions`` sessions stream a real person's turning head at 25 fps while, after a
quiet spell, another participant enrolls selfies over signaling back to back (the `mesh` method, as
`gramcast serve` does). Per session: its received frame rate and longest gap between received frames
while no selfie was being enrolled and while one was, and how long a selfie took.

    python bench/enroll_during_call.py [--sessions 2] [--seconds 24] [--repeats 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from _report import emit
from stream import ROOT, SECRET, _serve, camera_frames, run_sessions

SELFIE = ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg"


def window_stats(times: list[float], windows: list[tuple[float, float]]) -> dict:
    """Frames received inside ``windows`` per second of them, and the longest gap between consecutive
    received frames that ends inside one."""
    inside = lambda t: any(a <= t <= b for a, b in windows)   # noqa: E731
    span = sum(b - a for a, b in windows)
    gaps = [t1 - t0 for t0, t1 in zip(times, times[1:]) if inside(t1)]
    return {"fps": round(sum(inside(t) for t in times) / span, 2) if span > 0 else None,
            "longest_gap_ms": round(1e3 * max(gaps), 1) if gaps else None, "seconds": round(span, 1)}


async def measure(port: int, sessions: int, seconds: float, quiet_s: float, base, run: int) -> dict:
    from gramcast.server.client import GramcastClient
    from gramcast.server.tokens import mint_token

    selfie = SELFIE.read_bytes()
    enrollments: list[tuple[float, float]] = []
    started = time.monotonic()

    async def enroll_back_to_back():
        room = f"enroll-{time.monotonic_ns()}"
        async with GramcastClient(f"ws://127.0.0.1:{port}/ws", mint_token(SECRET, room, "selfie"), room) as c:
            await asyncio.sleep(quiet_s)
            while time.monotonic() < started + seconds - 2.0:
                t0 = time.monotonic()
                await c.enroll(selfie)
                enrollments.append((t0, time.monotonic()))

    r, _ = await asyncio.gather(run_sessions(port, sessions, seconds, base, run), enroll_back_to_back())
    times = r.pop("_times")
    r.pop("_keys")
    first_enroll = enrollments[0][0] if enrollments else time.monotonic()
    per = []
    for t in times:
        quiet = [(t[0], first_enroll)] if t else []
        per.append({"quiet": window_stats(t, quiet), "enrolling": window_stats(t, enrollments)})
    return {"sessions": sessions, "enrollments": len(enrollments),
            "enroll_s_median": round(statistics.median(b - a for a, b in enrollments), 2) if enrollments else None,
            "per_session": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--quiet", type=float, default=9.0, help="seconds before the first selfie")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import gramcast

    tmp = Path(tempfile.mkdtemp())
    avatar_file = str(tmp / "a.gca")
    gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png").save(avatar_file)
    base = camera_frames()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, daemon=True, args=(q, avatar_file, 256, "current", None))
    proc.start()
    port = q.get(timeout=180)
    runs = []
    try:
        for run in range(args.repeats):
            r = asyncio.run(measure(port, args.sessions, args.seconds, args.quiet, base, run))
            runs.append(r)
            for i, p in enumerate(r["per_session"]):
                print(f"session {i}: quiet {p['quiet']['fps']} fps (longest gap {p['quiet']['longest_gap_ms']} ms), "
                      f"while enrolling {p['enrolling']['fps']} fps (longest gap {p['enrolling']['longest_gap_ms']} "
                      f"ms); {r['enrollments']} selfies, {r['enroll_s_median']} s each", flush=True)
    finally:
        proc.terminate()

    def mean(phase, key):
        xs = [p[phase][key] for r in runs for p in r["per_session"] if p[phase][key] is not None]
        return round(statistics.mean(xs), 2) if xs else None

    summary = {f"{phase}_{key}": mean(phase, key) for phase in ("quiet", "enrolling")
               for key in ("fps", "longest_gap_ms")}
    summary["enroll_s_median"] = statistics.median(r["enroll_s_median"] for r in runs if r["enroll_s_median"])
    print(f"quiet {summary['quiet_fps']} fps, longest gap {summary['quiet_longest_gap_ms']} ms | enrolling "
          f"{summary['enrolling_fps']} fps, longest gap {summary['enrolling_longest_gap_ms']} ms | a selfie "
          f"{summary['enroll_s_median']} s", flush=True)
    emit({"sessions": args.sessions, "seconds": args.seconds, "summary": summary, "runs": runs}, args.json)


if __name__ == "__main__":
    main()
