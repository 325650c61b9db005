"""A still head: reusing the last render and the last tracked pose. Frames rendered, time per frame, the error.

A session renders the avatar at every camera frame's tracked pose; a participant who sits still still sends
25 frames a second whose smoothed pose wanders by fractions of a pixel (``gramcast.render_reuse``), and the
face mesh runs on each of them (``gramcast.face.stillness``). This runs the session's own per-frame work
(``AvatarFrameProcessor.track``, then ``draw``: render or reuse, placement) on three camera clips, for each
variant (``SessionConfig.reuse_render_px`` : ``TrackerConfig.still_px``) side by side, frame by frame in turn
(so load affects all alike):

* ``still``: a real portrait held still in a 640x480 frame, with fresh sensor noise (sigma 3 levels) each frame;
* ``drift``: the person re-rendered turning slowly, 0.1 rad over 4 s, as a listener shifts, plus noise;
* ``sweep``: the yaw sweep of bench/stream.py (0.35 rad each way, once a second): nothing to reuse.

Reported per clip and variant: the share of frames that reused a render and that kept the tracked pose, the
mean time per frame (tracking + draw) and of the renders alone, and for reused renders the mean absolute
difference from what the renderer draws at that frame's pose (premultiplied RGBA, 8-bit levels; mean and
worst frame).

    python bench/render_reuse.py [--variants 0:0,0.5:0,0.5:0.25] [--seconds 6] [--avatar FILE.gca] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _report import emit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PERSON = ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg"
FPS = 25.0


def _noisy(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame + rng.normal(0.0, 3.0, frame.shape), 0, 255).astype(np.uint8)


def camera_clips(n: int) -> dict[str, list[np.ndarray]]:
    import cv2

    import gramcast
    from gramcast.compositing import place_rgba
    from gramcast.images import load_image

    rng = np.random.default_rng(0)
    still = np.full((480, 640, 3), 110, np.float32)
    still[40:440, 120:520] = cv2.resize(load_image(PERSON), (400, 400), interpolation=cv2.INTER_AREA)
    renderer = gramcast.Renderer(gramcast.enroll(PERSON), device="cpu")

    def rendered(yaw: float) -> np.ndarray:
        rgb, alpha = renderer.render_rgba((yaw, 0.0), 256)
        m = np.array([[1.1, 0, 320 - 141], [0, 1.1, 250 - 141]])
        return place_rgba(np.full((480, 640, 3), 110, np.uint8), rgb, alpha, m).astype(np.float32)

    return {"still": [_noisy(still, rng) for _ in range(n)],
            "drift": [_noisy(rendered(0.1 * min(i / (4 * FPS), 1.0)), rng) for i in range(n)],
            "sweep": [_noisy(rendered(0.35 * np.sin(2 * np.pi * i / FPS)), rng) for i in range(n)]}


def run_clip(avatar, frames: list[np.ndarray], variants: list[tuple[float, float]], size: int) -> dict[str, dict]:
    """Each (reuse_render_px, TrackerConfig.still_px) variant's processor on ``frames``, in turn frame by frame."""
    from gramcast.compositing import AvatarFrameProcessor
    from gramcast.face import HeadTracker, TrackerConfig
    from gramcast.session import SessionConfig

    procs = {f"{t}:{s}": AvatarFrameProcessor(avatar, SessionConfig(device="cpu", avatar_resolution=size,
                                                                    reuse_render_px=t),
                                              tracker=HeadTracker(TrackerConfig(still_px=s)))
             for t, s in variants}
    rec = {t: {"frame_ms": [], "render_ms": [], "reused": 0, "still": 0, "error": []} for t in procs}
    for i, frame in enumerate(frames):
        for t, proc in procs.items():
            t0 = time.perf_counter()
            tracked, track_info = proc.track(frame, i / FPS)
            _, info = proc.draw(frame, tracked)
            r = rec[t]
            r["frame_ms"].append((time.perf_counter() - t0) * 1e3)
            r["still"] += int(track_info["tracking_still"])
            if info["render_reused"]:
                r["reused"] += 1
                truth = proc.renderer.render_premultiplied(tracked.yaw_pitch, size).astype(np.float32)
                r["error"].append(float(np.abs(proc.reuse.image.astype(np.float32) - truth).mean()))
            else:
                r["render_ms"].append(info["render_ms"])
    for proc in procs.values():
        proc.tracker.close()
    out = {}
    for t, r in rec.items():
        warm = r["frame_ms"][int(FPS):]           # the first second: models and caches warming up
        out[t] = {"reused_share": round(r["reused"] / len(frames), 3),
                  "tracked_still_share": round(r["still"] / len(frames), 3),
                  "frame_ms_mean": round(statistics.fmean(warm), 2),
                  "render_ms_median": round(statistics.median(r["render_ms"]), 2) if r["render_ms"] else None,
                  "reuse_error_mean": round(statistics.fmean(r["error"]), 3) if r["error"] else None,
                  "reuse_error_worst": round(max(r["error"]), 3) if r["error"] else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="0:0,0.5:0,0.5:0.25",
                    help="REUSE:STILL pairs, comma-separated: SessionConfig.reuse_render_px and "
                         "TrackerConfig.still_px (0:0 = every frame tracked and rendered)")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each camera clip")
    ap.add_argument("--size", type=int, default=256, help="avatar render size (default 256)")
    ap.add_argument("--avatar", type=Path, metavar="FILE.gca", help="default: the sample portrait enrolled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    import gramcast

    torch.set_num_threads(args.threads)
    variants = [tuple(float(x) for x in v.split(":")) for v in args.variants.split(",")]
    avatar = (gramcast.Avatar.load(args.avatar) if args.avatar else
              gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png"))
    clips = camera_clips(int(args.seconds * FPS))
    results = {name: run_clip(avatar, frames, variants, args.size) for name, frames in clips.items()}
    for name, res in results.items():
        base = next(iter(res))
        for t, r in res.items():
            ratio = res[base]["frame_ms_mean"] / r["frame_ms_mean"]
            print(f"{name:6s} reuse:still {t:>9s}: render reused {r['reused_share'] * 100:5.1f} %, pose kept "
                  f"{r['tracked_still_share'] * 100:5.1f} % of frames, {r['frame_ms_mean']:6.2f} ms a frame "
                  f"({ratio:.2f}x of {base}), renders {r['render_ms_median']} ms, reused frames off by "
                  f"{r['reuse_error_mean']} levels (worst {r['reuse_error_worst']})")
    emit({"bench": "render_reuse", "threads": args.threads, "size": args.size, "seconds": args.seconds,
          "avatar": str(args.avatar) if args.avatar else "sample (mesh)",
          "layers": avatar.num_layers, "results": results}, args.json)


if __name__ == "__main__":
    main()
