"""Align a folder of photos into a training set: ``images/*.jpg`` + ``poses.json`` (+ ``skipped.json``).

``poses.json`` is ``{"items": [{"image", "yaw", "pitch", "roll", "person", "source"}], ...}``, the
format ``gramcast.training.data`` reads. ``person`` is the photo's first sub-folder under the source
(LFW's layout), or its file stem when the folder is flat, so splits can be made by person.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from gramcast.errors import GramcastError
from gramcast.media_io import atomic_output

__all__ = ["PrepareReport", "prepare_faces", "find_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class PrepareReport:
    written: int = 0
    skipped: list[dict] = field(default_factory=list)


def find_images(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


_worker_mesh = None


def _align_one(job: tuple[str, int, float, bool]):
    from gramcast.face.alignment import align_face, pick_single_face
    from gramcast.face.landmarks import FaceMesh
    from gramcast.images import load_image

    global _worker_mesh
    path, size, min_eye, pick_largest = job
    if _worker_mesh is None:
        _worker_mesh = FaceMesh(static=True, max_faces=4)
    try:
        image = load_image(path)
        faces = _worker_mesh.detect(image)
        face = pick_single_face(faces, Path(path).name, min_eye, "largest" if pick_largest else "only")
        aligned = align_face(image, face, size)
    except GramcastError as exc:
        return path, None, f"{type(exc).__name__}: {exc}"
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    p = aligned.pose
    return path, (jpg.tobytes(), p.yaw, p.pitch, p.roll), None


def prepare_faces(src: str | Path, dst: str | Path, size: int = 256, min_eye_distance: float | None = None,
                  workers: int = 1, pick_largest: bool = False, progress: bool = True) -> PrepareReport:
    """Align every photo under ``src`` into ``dst``. Unusable files are skipped and listed with a reason."""
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise GramcastError(f"{src} is not a folder of photos")
    paths = find_images(src)
    if not paths:
        raise GramcastError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {src}")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    min_eye = size / 8.0 if min_eye_distance is None else min_eye_distance
    jobs = [(str(p), size, min_eye, pick_largest) for p in paths]
    report, items = PrepareReport(), []
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(_align_one, jobs, chunksize=8)
    else:
        pool, results = None, map(_align_one, jobs)
    try:
        for i, (path, ok, reason) in enumerate(tqdm(results, total=len(jobs), desc="prepare-faces",
                                                    unit="photo", disable=not progress)):
            rel = Path(path).relative_to(src)
            if ok is None:
                report.skipped.append({"file": str(rel), "reason": reason})
                continue
            jpg, yaw, pitch, roll = ok
            name = f"images/{i:06d}.jpg"
            with atomic_output(dst / name) as tmp:
                Path(tmp).write_bytes(jpg)
            person = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            items.append({"image": name, "yaw": round(yaw, 5), "pitch": round(pitch, 5),
                          "roll": round(roll, 5), "person": person, "source": str(rel)})
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    report.written = len(items)
    meta = {"size": size, "min_eye_distance": min_eye, "source": str(src), "items": items}
    # a set of no faces is no training set: no poses.json, so that nothing takes it for one
    for name, obj in ((("poses.json", meta),) if items else ()) + (("skipped.json", {"skipped": report.skipped}),):
        with atomic_output(dst / name) as tmp:
            Path(tmp).write_text(json.dumps(obj, indent=1))
    if not items:
        if not any((dst / "images").iterdir()):
            (dst / "images").rmdir()
        kinds = sorted({s["reason"].split(":")[0] for s in report.skipped})
        raise GramcastError(f"none of the {len(paths)} photos under {src} gave an aligned face ({', '.join(kinds)}); "
                            f"each file's reason: {dst / 'skipped.json'}")
    return report

