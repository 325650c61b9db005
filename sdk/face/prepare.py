"""Align a folder of photos into a training set: ``images/*.jpg`` + ``poses.json`` (+ ``skipped.json``).

``poses.json`` is ``{"items": [{"image", "yaw", "pitch", "roll", "person", "source"}], ...}``, the
format ``gramcast.training.data`` reads. ``person`` is the photo's first sub-folder under the source
(LFW's layout), or its file stem when the folder is flat, so splits can be made by person.

The dataset is built in a hidden folder beside the output and renamed into place at the end, so the output
holds a whole dataset or none: an interrupted run leaves nothing, and a re-run never mixes its crops with an
earlier run's (an output that holds a dataset is refused unless ``overwrite``, which replaces it whole).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from gramcast.errors import GramcastError, InvalidArgumentError, OutputPathError

__all__ = ["PrepareReport", "prepare_faces", "find_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif"}

#: What ``prepare_faces`` writes into its output folder; ``overwrite`` replaces a folder of only these.
DATASET_ENTRIES = ("images", "poses.json", "skipped.json")
# files a desktop's file browser drops into any folder it shows; not the user's data, so no reason to refuse
_BROWSER_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}
# in the names of the hidden folders a run builds in (and of the one the old dataset waits in while it is
# replaced); never taken as photos, where the output lies inside the photos' folder
_WORK_MARK = ".prepare-faces-"


@dataclass
class PrepareReport:
    written: int = 0
    skipped: list[dict] = field(default_factory=list)


def find_images(src: Path, exclude: Path | None = None) -> list[Path]:
    """The photos under ``src`` by their image suffix, sorted, none under ``exclude``.

    Symlinked folders are followed (a person's folder linked in from elsewhere), each real folder once; a
    link to ``src`` or a folder above it is a loop and not followed. A link to a missing file is listed:
    loading it says so, where dropping it would hide the photo."""
    src = Path(src)
    if not src.is_dir():
        return []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    real_src = Path(os.path.realpath(src))
    seen: set[tuple[int, int]] = set()
    found = []

    def unreadable(exc: OSError):
        raise GramcastError(f"cannot read folder {exc.filename} ({exc.strerror}): make it readable, or move it "
                            f"out of {src}")

    for folder, dirs, files in os.walk(src, onerror=unreadable, followlinks=True):
        st, real = os.stat(folder), os.path.realpath(folder)
        above_src = real != str(real_src) and real_src.is_relative_to(real)
        if (st.st_dev, st.st_ino) in seen or real == excluded or above_src:
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        # sorted, so that of two ways to one folder it is always the same one that is kept
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") and _WORK_MARK in d))
        found += [Path(folder, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    # not a named pipe or a device named like a photo, which reading would wait on forever
    return sorted(p for p in found if p.is_file() or (p.is_symlink() and not p.exists()))


_worker_mesh = _worker_detector = None


def _align_one(job: tuple[str, int, float, bool]):
    from gramcast.face.alignment import align_face, pick_single_face
    from gramcast.face.detection import FaceDetector, find_faces
    from gramcast.face.landmarks import FaceMesh
    from gramcast.images import load_image

    global _worker_mesh, _worker_detector
    path, size, min_eye, pick_largest = job
    if _worker_mesh is None:
        _worker_mesh, _worker_detector = FaceMesh(static=True, max_faces=4), FaceDetector()
    try:
        image = load_image(path)
        # as enrollment finds them: a face small in a big photo, or between two others, is found too
        faces = find_faces(image, _worker_mesh, _worker_detector)
        face = pick_single_face(faces, Path(path).name, min_eye, "largest" if pick_largest else "only")
        aligned = align_face(image, face, size)
    except GramcastError as exc:
        return path, None, f"{type(exc).__name__}: {exc}"
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    p = aligned.pose
    return path, (jpg.tobytes(), p.yaw, p.pitch, p.roll), None


def _check_output(src: Path, dst: Path, overwrite: bool) -> tuple[bool, bool]:
    """Raise unless a dataset can be written at ``dst``; else whether ``dst`` holds a dataset, and whether
    it holds anything (which the new dataset replaces)."""
    real_src, real_dst = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if real_dst == real_src or real_dst in real_src.parents:
        raise OutputPathError(f"cannot write the dataset to {dst}: it holds the photos ({src}); "
                              "give an output folder outside them")
    if dst.exists() and not dst.is_dir():
        raise OutputPathError(f"cannot write the dataset to {dst}: it is a file; give a folder's name "
                              "(a new one, or one prepare-faces wrote before, with --overwrite)")
    if not dst.exists():
        above = next(p for p in real_dst.parents if p.exists())
        if not above.is_dir():
            raise OutputPathError(f"cannot write the dataset to {dst}: {above} is a file, not a folder")
        if not os.access(above, os.W_OK):
            raise OutputPathError(f"cannot write the dataset to {dst}: folder {above} is not writable; "
                                  "write it elsewhere")
        return False, False
    entries = {e.name for e in dst.iterdir()} - _BROWSER_LITTER
    foreign = sorted(entries - set(DATASET_ENTRIES))
    if foreign:
        raise OutputPathError(f"cannot write the dataset to {dst}: it holds files prepare-faces did not write "
                              f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give a new "
                              "or empty folder")
    # a failed run's skipped.json alone is no dataset: a re-run after adding photos replaces it unasked
    holds_dataset = bool(entries & {"images", "poses.json"})
    if holds_dataset and not overwrite:
        raise OutputPathError(f"{dst} already holds a dataset: --overwrite replaces it; another folder keeps it")
    if not os.access(real_dst.parent, os.W_OK):
        raise OutputPathError(f"cannot write the dataset to {dst}: folder {real_dst.parent} is not writable "
                              "(the dataset is built beside it, then renamed); write it elsewhere")
    return holds_dataset, any(dst.iterdir())


@contextlib.contextmanager
def _signals_deferred():
    """Ctrl-C and SIGTERM wait until the block is done (then act as they would have), so that no signal
    lands between moving the old dataset aside and renaming the new one into its place."""
    kinds = (signal.SIGINT, signal.SIGTERM)
    handlers = {s: signal.getsignal(s) for s in kinds}
    if threading.current_thread() is not threading.main_thread() or None in handlers.values():
        yield
        return
    caught = []
    for s in kinds:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


def _move_into_place(built: Path, dst: Path, replace: bool) -> None:
    """Rename the folder ``built`` to ``dst``; with ``replace``, the dataset at ``dst`` goes, whole."""
    old = None
    try:
        with _signals_deferred():
            if replace:
                old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}{_WORK_MARK}old-"))
                os.replace(dst, old)       # over the empty folder mkdtemp made
            try:
                os.replace(built, dst)     # also over an empty folder at dst
            except OSError as exc:
                if old is not None:
                    os.replace(old, dst)
                    old = None
                if not replace and dst.is_dir() and any(dst.iterdir()):
                    raise OutputPathError(f"{dst} got a dataset from another run meanwhile; give another "
                                          "folder, or --overwrite to replace it") from None
                raise OutputPathError(f"cannot write the dataset to {dst}: {exc.strerror or exc}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def prepare_faces(src: str | Path, dst: str | Path, size: int = 256, min_eye_distance: float | None = None,
                  workers: int = 1, pick_largest: bool = False, progress: bool = True,
                  overwrite: bool = False) -> PrepareReport:
    """Align every photo under ``src`` into ``dst``. Unusable files are skipped and listed with a reason.

    ``dst`` must be new, empty, or (with ``overwrite``) a dataset prepare-faces wrote, which is then
    replaced whole. Photos under ``dst`` are never taken as input."""
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise GramcastError(f"{src} is not a folder of photos")
    if workers < 1:
        raise InvalidArgumentError(f"workers must be at least 1, got {workers}")
    if dst.is_symlink():    # the folder it names is the one to replace, not the link
        dst = Path(os.path.realpath(dst))
    holds_dataset, replace = _check_output(src, dst, overwrite)
    paths = find_images(src, exclude=dst)
    if not paths:
        raise GramcastError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {src}")
    min_eye = size / 8.0 if min_eye_distance is None else min_eye_distance
    jobs = [(str(p), size, min_eye, pick_largest) for p in paths]

    made = [p for p in reversed(dst.absolute().parents) if not p.exists()]
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}{_WORK_MARK}"))
    except OSError as exc:
        raise OutputPathError(f"cannot write the dataset to {dst}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(build, 0o777 & ~umask)  # mkdtemp's 0700 is for secrets, not a dataset
        (build / "images").mkdir()
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
                (build / name).write_bytes(jpg)
                person = rel.parts[0] if len(rel.parts) > 1 else rel.stem
                items.append({"image": name, "yaw": round(yaw, 5), "pitch": round(pitch, 5),
                              "roll": round(roll, 5), "person": person, "source": str(rel)})
            if pool is not None:
                pool.close()
        finally:
            if pool is not None:
                pool.terminate()       # at once on Ctrl-C, where waiting for the workers could hang
                pool.join()
        report.written = len(items)
        (build / "skipped.json").write_text(json.dumps({"skipped": report.skipped}, indent=1))
        if items:
            meta = {"size": size, "min_eye_distance": min_eye, "source": str(src), "items": items}
            (build / "poses.json").write_text(json.dumps(meta, indent=1))
        if not items:
            kinds = ", ".join(sorted({s["reason"].split(":")[0] for s in report.skipped}))
            if holds_dataset:    # a run that aligned nothing does not cost the user the dataset they had
                raise GramcastError(f"none of the {len(paths)} photos under {src} gave an aligned face ({kinds}); "
                                    f"{dst} is left as it was")
            # a set of no faces is no training set: no poses.json, so that nothing takes it for one; only
            # the listing of why
            (build / "images").rmdir()
            _move_into_place(build, dst, replace)
            raise GramcastError(f"none of the {len(paths)} photos under {src} gave an aligned face ({kinds}); "
                                f"each file's reason: {dst / 'skipped.json'}")
        _move_into_place(build, dst, replace)
        return report
    except BaseException as exc:
        shutil.rmtree(build, ignore_errors=True)
        if not dst.exists():
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if isinstance(exc, OSError) and exc.errno is not None:   # a full disk, say: one line, not a trace
            raise OutputPathError(f"cannot write the dataset to {dst}: {exc.strerror}; write it elsewhere") from None
        raise
