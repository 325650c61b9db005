"""Head tracking and still-image alignment cost, pinned to one CPU core.

Frames are a real portrait placed in 640x480 and 1280x720 frames, moving slightly every frame
(so the tracker cannot cache). Prints a table and JSON (``--json PATH`` also writes it).

    python bench/tracking.py [--frames 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from _report import emit

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def frames_for(portrait: np.ndarray, size: tuple[int, int], n: int) -> list[np.ndarray]:
    w, h = size
    out = []
    for i in range(n):
        s = 0.55 * h / portrait.shape[0]
        m = cv2.getRotationMatrix2D((portrait.shape[1] / 2, portrait.shape[0] / 2), 8 * math.sin(i / 10), s)
        m[:, 2] += np.array([w / 2 + 0.05 * w * math.sin(i / 15), h / 2]) - np.array(portrait.shape[1::-1]) / 2
        out.append(cv2.warpAffine(portrait, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(180, 180, 180)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    from gramcast.face import FaceMesh, HeadTracker, detect_and_align
    from gramcast.images import load_image

    portrait = load_image(ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg")
    results = {"cores": 1, "frames": args.frames}
    for w, h in [(640, 480), (1280, 720)]:
        frames = frames_for(portrait, (w, h), args.frames)
        with HeadTracker() as tracker:
            for f in frames[:10]:
                tracker.update(f, 0.0)
            times = []
            for i, f in enumerate(frames):
                t0 = time.perf_counter()
                out = tracker.update(f, timestamp=1 + i / 30)
                times.append(time.perf_counter() - t0)
                assert out.face_found
        results[f"track_{w}x{h}_ms"] = 1e3 * float(np.median(times))
        results[f"track_{w}x{h}_p95_ms"] = 1e3 * float(np.percentile(times, 95))
    with FaceMesh(static=True) as mesh:
        detect_and_align(portrait, mesh=mesh)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            detect_and_align(portrait, size=256, mesh=mesh)
            times.append(time.perf_counter() - t0)
    results["align_still_512px_to_256_ms"] = 1e3 * float(np.median(times))
    for k, v in results.items():
        print(f"{k:32s} {v:8.2f}" if isinstance(v, float) else f"{k:32s} {v}")
    emit(results, args.json, indent=1)


if __name__ == "__main__":
    main()
