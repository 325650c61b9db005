"""An interrupted ``gramcast evaluate`` resumes where it stopped (``EvalProgress``).

An evaluation of a few hundred people takes hours, and a Ctrl-C, SIGTERM or crash should not cost the people
already done. Each person's finished results under each method are kept in ``OUT/PROGRESS_DIR`` as one JSON
record, written atomically (temp file, then rename), so an interruption at any point leaves only whole records;
the same command run again evaluates only the people without one. Reusing a record is right only if this run
would have produced the same figures, so the folder also holds the run's fingerprint (options, portraits,
bundle weights, installed score weights, gramcast version): a run whose fingerprint differs is refused, naming
what differs, rather than mixing the two runs' results.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gramcast.errors import GramcastError

if TYPE_CHECKING:
    from gramcast.training.enroll_eval import EvalConfig
    from gramcast.training.eval_scores import LearnedScores

__all__ = ["PROGRESS_DIR", "EvalProgress", "run_fingerprint", "progress_count", "hold_out"]

#: where a run keeps each person's finished results until it completes (inside --out): an interrupted run
#: resumes from them
PROGRESS_DIR = ".evaluate-progress"
#: the progress folder's record of the run it belongs to
_RUN_FILE = "run.json"
#: what a kept person's results mean: 2 (2026-12-06) scores the input view in the photo's own crop and adds
#: the outline scores, so a run interrupted before then is not resumed with figures of the other kind
_PROGRESS_VERSION = 2
#: a person's record: the person's index in the run; a temp file a killed run left (".00003.k2j4.json") is not one
_RECORD = re.compile(r"[0-9]{5,}\.json")


def run_fingerprint(root: Path, people: list[tuple[str, list[Path]]], config: EvalConfig, inverter,
                    metrics: LearnedScores) -> dict:
    """What decides a person's results: the options, the portraits (names, sizes, times), the bundle's weights
    (by their content hashes), which scores the installed weights can give, and this gramcast. Two runs with
    the same fingerprint produce the same figures for a person: only then are an earlier run's reused."""
    import gramcast

    def photo(path: Path) -> list:
        st = path.stat()
        return [str(path.relative_to(root)), st.st_size, st.st_mtime_ns]

    return {"version": _PROGRESS_VERSION, "gramcast": gramcast.__version__,
            "root": str(root.resolve()), "methods": list(config.methods),
            "options": {"resolution": config.resolution, "max": config.max_portraits,
                        "strip_yaws": list(config.strip_yaws), "min_eye_distance": config.min_eye_distance,
                        "refine_steps": config.refine_steps, "face": config.face},
            "weights": None if inverter is None else dict(inverter.meta.get("bundle", {})),
            "scores": {"lpips": getattr(metrics, "lpips", None) is not None,
                       "identity": getattr(metrics, "arcface", None) is not None},
            "portraits": [[person, [photo(p) for p in photos]] for person, photos in people]}


_WHAT_DIFFERS = {"version": "the progress format", "gramcast": "the gramcast version", "root": "the portraits folder",
                 "methods": "--methods", "options": "the options (--max, --refine-steps, --face)",
                 "weights": "the --weights bundle", "scores": "the installed LPIPS / ArcFace weights",
                 "portraits": "the portraits under the folder"}


@contextmanager
def hold_out(out: Path):
    """``out`` (made if missing) held by this run while the block runs: a second ``gramcast evaluate`` into
    it meanwhile is refused rather than taking the running one's progress for an interrupted run's (resuming
    it, refusing it as interrupted, or deleting it under --fresh) and writing its files over the other's. An
    advisory lock on the folder itself (``flock``), so nothing is left in ``out``, and a killed run's lock
    goes with its process. Where the system has no such lock (Windows, some network file systems) runs are
    not held apart."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GramcastError(f"--out {out}: cannot make the folder ({exc.strerror}); give another --out") from None
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GramcastError(f"--out {out}: another gramcast evaluate is running into this folder now; wait "
                                "for it to finish (or stop it: it keeps what it has done), or give another "
                                "--out") from None
        except OSError:
            pass                                   # no flock here (e.g. a network file system): not held apart
        yield
    finally:
        os.close(fd)


class EvalProgress:
    """Each person's finished results under ``out/PROGRESS_DIR``, one JSON file per method and person, each
    written atomically (temp file, then rename): an interruption at any point leaves only whole records.
    ``done``: the records an interrupted run with this fingerprint left, by (method, person's index)."""

    def __init__(self, out: Path, fingerprint: dict, fresh: bool):
        self.dir = out / PROGRESS_DIR
        self.fingerprint = fingerprint
        self.done: dict[tuple[str, int], dict] = {}
        if (self.dir.exists() or self.dir.is_symlink()) and not self.dir.is_dir():
            raise GramcastError(f"--out {out}: {self.dir} is not a folder, and gramcast evaluate keeps its "
                                "progress there; move it away or give another --out")
        if fresh:
            self.discard()
        elif self.dir.is_dir():
            self._resume()

    def _resume(self) -> None:
        import json

        run_file = self.dir / _RUN_FILE
        if not run_file.is_file():
            # a completed run's leftovers (its record of the run is removed first) or something not ours
            # inside our folder: nothing to resume from
            self.discard()
            return
        try:
            earlier = json.loads(run_file.read_text())
        except (OSError, ValueError):
            earlier = None
        if not isinstance(earlier, dict):
            raise GramcastError(f"--out {self.dir.parent}: {run_file} cannot be read, so the interrupted run there "
                                "cannot be resumed; add --fresh to discard it, or give another --out")
        differs = [_WHAT_DIFFERS.get(k, k) for k in sorted(set(earlier) | set(self.fingerprint), key=str)
                   if earlier.get(k) != self.fingerprint.get(k)]
        if differs:
            kept = progress_count(self.dir.parent)
            raise GramcastError(f"--out {self.dir.parent} holds an interrupted evaluation "
                                f"({kept} person result{'s' if kept != 1 else ''}) that differs from this run in "
                                f"{_and(differs)}: its results cannot be mixed with these; run the same command "
                                "as then to resume it, add --fresh to discard it, or give another --out")
        people = self.fingerprint["portraits"]
        for method in self.fingerprint["methods"]:
            folder = self.dir / _folder_name(method)
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
                if not _RECORD.fullmatch(path.name):
                    continue
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue                       # unreadable: that person is evaluated again
                index = int(path.stem)
                if (isinstance(record, dict) and index < len(people) and record.get("person") == people[index][0]
                        and record.get("method") == method):
                    record = _as_saved(record)
                    if record is not None:
                        self.done[method, index] = record

    def record(self, method: str, index: int) -> dict | None:
        """The record kept for this person under ``method`` (its contact-sheet ``strip`` an image); None where
        this person is still to be evaluated."""
        return self.done.get((method, index))

    def discard(self) -> None:
        """Remove the folder: its record of the run first, so that an interruption here leaves nothing that
        looks resumable."""
        import shutil

        (self.dir / _RUN_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        import json

        from gramcast.media_io import atomic_output

        if (self.dir / _RUN_FILE).is_file():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.dir / _RUN_FILE) as tmp:
            tmp.write_text(json.dumps(self.fingerprint))

    def save(self, method: str, index: int, record: dict) -> None:
        """Keep a person's finished ``record``; its ``strip`` (an image, or None) is stored as PNG text."""
        import json

        from gramcast.media_io import atomic_output

        strip = record.get("strip")
        folder = self.dir / _folder_name(method)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder / f"{index:05d}.json") as tmp:
            tmp.write_text(json.dumps({"method": method, **record,
                                       "strip": None if strip is None else _png_text(strip)}))


def _as_saved(record: dict) -> dict | None:
    """A record read back as ``save`` wrote it, its ``strip`` decoded into an image; None where something else
    changed it (that person is evaluated again, not read)."""
    if not (isinstance(record.get("row"), dict) and isinstance(record.get("pairs"), list)
            and isinstance(record.get("lost"), list) and "enroll_s" in record
            and (record["enroll_s"] is None or isinstance(record["enroll_s"], (int, float)))):
        return None
    if record.get("strip") is None:
        return record
    try:
        return {**record, "strip": _image_from_png_text(record["strip"])}
    except Exception:        # a strip that is not PNG text
        return None


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _folder_name(method: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", method)


def progress_count(out: Path) -> int:
    """How many person results an interrupted run left in ``out`` (``PROGRESS_DIR``), for the resume hint:
    none where its record of the run has gone (a completed run's folder, being removed), as a rerun would
    discard them."""
    folder = out / PROGRESS_DIR
    if not (folder / _RUN_FILE).is_file():
        return 0
    return sum(1 for p in folder.glob("*/*.json") if _RECORD.fullmatch(p.name))


def _png_text(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _image_from_png_text(text: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))
