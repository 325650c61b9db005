"""Holes in the face: how much of it an avatar shows see-through from views other than the photo's.

    python bench/face_holes.py [--data ../shared/data/faces] [--people 60] [--seed 1] [--method mesh]
                               [--json docs/bench/face_holes.json]

A face is opaque, so any of it that renders see-through is an error, whatever the photo's matte said: the
matte's soft outline, seen by the photo at a grazing angle, spreads over many texels that a side view sees
squarely (``gramcast.avatar.mesh_method.face_floor``). LFW people (a shuffle of the person folders with
``--seed``; the first photo of each that enrolls, faces down to 20 px between the eyes) are enrolled and
rendered at 7 poses: frontal, yaw +-0.5, pitch +-0.3, (0.3, 0.15) and (-0.3, -0.15). The face at each view is
the hull of the person's landmarks (frontalised, ``mesh_method.world_landmarks``) projected there, less 2 px;
the score is the share of it under 0.9 opacity, over all 7 views. Printed: the mean and median over people,
how many are above 1 % and 2 %, the worst; JSON per person. Compare two versions by running each (the same
``--seed`` and ``--people`` pick the same photos).
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from _report import FACES, emit, run_quietly

import cv2
import numpy as np

POSES = [(0.0, 0.0), (-0.5, 0.0), (0.5, 0.0), (0.0, 0.3), (0.0, -0.3), (0.3, 0.15), (-0.3, -0.15)]
RESOLUTION = 256


def see_through_share(avatar, points: np.ndarray) -> tuple[float, float]:
    """The share of the face under 0.9 and under 0.5 opacity over ``POSES``; ``points`` ``(N, 3)``: its
    landmarks in world units."""
    from gramcast import Renderer
    from gramcast.face.matte import disc, landmark_hull
    from gramcast.face.reference import project_world

    alpha = Renderer(avatar, device="cpu").render(POSES, RESOLUTION).alpha[:, 0].numpy()
    face_px = under_09 = under_05 = 0
    for a, (yaw, pitch) in zip(alpha, POSES):
        hull = landmark_hull(project_world(points, RESOLUTION, yaw, pitch), (RESOLUTION, RESOLUTION))
        face = cv2.erode(hull, disc(2)) > 0
        face_px += int(face.sum())
        under_09 += int((a[face] < 0.9).sum())
        under_05 += int((a[face] < 0.5).sum())
    return under_09 / max(face_px, 1), under_05 / max(face_px, 1)


def main() -> None:
    run_quietly(run)


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=FACES)
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="mesh")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import gramcast
    from gramcast.avatar.mesh_method import world_landmarks
    from gramcast.face import detect_and_align
    from gramcast.face.reference import load_reference
    from gramcast.images import load_image

    folders = sorted(p for p in (args.data / "lfw").glob("*") if p.is_dir())
    if not folders:
        raise SystemExit(f"no LFW person folders under {args.data}/lfw: pass --data")
    random.Random(args.seed).shuffle(folders)
    reference = load_reference()
    rows, start = [], time.perf_counter()
    for folder in folders:
        if len(rows) >= args.people:
            break
        photo = sorted(folder.glob("*.jpg"))[0]
        try:
            avatar = gramcast.enroll(photo, method=args.method, min_eye_distance=20)
        except gramcast.GramcastError:
            continue            # two faces, turned too far, ...: the next person
        aligned = detect_and_align(load_image(photo), min_eye_distance=20)
        under_09, under_05 = see_through_share(avatar, world_landmarks(aligned, reference))
        rows.append({"photo": f"{folder.name}/{photo.name}", "yaw": avatar.meta["input_pose"]["yaw"],
                     "under_0.9": under_09, "under_0.5": under_05})
        print(f"{len(rows)}/{args.people} {photo.name}: {under_09:.2%} of the face under 0.9 opacity "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    share = np.array([r["under_0.9"] for r in rows])
    worst = rows[int(share.argmax())] if rows else None
    summary = {"people": len(rows), "mean": float(share.mean()) if rows else float("nan"),
               "median": float(np.median(share)) if rows else float("nan"),
               "above_1%": int((share > 0.01).sum()), "above_2%": int((share > 0.02).sum()),
               "worst": worst}
    print(f"\n{len(rows)} people: the face under 0.9 opacity, mean {summary['mean']:.2%}, median "
          f"{summary['median']:.2%}; above 1 %: {summary['above_1%']}, above 2 %: {summary['above_2%']}"
          + (f"; worst {worst['photo']} {worst['under_0.9']:.2%}" if worst else ""))
    emit({"summary": summary, "poses": POSES, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
