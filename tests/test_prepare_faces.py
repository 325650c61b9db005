"""``gramcast prepare-faces`` on folders as people have them: HEIC photos, linked folders, re-runs into the same
output, an output inside the photos, interruptions, an output path that is a file."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.cli import main
from gramcast.face.prepare import prepare_faces

FACES = sorted((Path(__file__).parent / "data" / "faces").glob("london_*.jpg"))


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in FACES[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def _dataset(dst: Path) -> tuple[list[dict], list[str]]:
    """poses.json's items, and the crops images/ holds."""
    items = json.loads((dst / "poses.json").read_text())["items"]
    return items, sorted(f"images/{p.name}" for p in (dst / "images").iterdir())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_heic_photos_and_linked_person_folders_are_taken(tmp_path):
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    src = _photos(tmp_path / "src" / "alice", 1).parent
    Image.open(FACES[1]).save(src / "frank.heic")
    elsewhere = _photos(tmp_path / "elsewhere" / "dave", 1)
    shutil.copy(FACES[2], elsewhere / "second.jpg")
    (src / "dave").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(src, target_is_directory=True)   # a link back up: followed, it never ends
    report = prepare_faces(src, tmp_path / "out", size=64, progress=False)
    items, crops = _dataset(tmp_path / "out")
    assert report.written == 4 and not report.skipped
    assert sorted(i["source"] for i in items) == ["alice/" + FACES[0].name, "dave/" + FACES[0].name,
                                                 "dave/second.jpg", "frank.heic"]
    assert {i["person"] for i in items} == {"alice", "dave", "frank"}
    assert crops == sorted(i["image"] for i in items)


def test_a_dataset_is_not_overwritten_unasked_and_overwrite_replaces_it_whole(tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["prepare-faces", str(_photos(tmp_path / "big", 3)), str(dst), "--size", "64"]) == 0
    before = {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    small = _photos(tmp_path / "small", 1)
    capsys.readouterr()
    assert main(["prepare-faces", str(small), str(dst), "--size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a dataset" in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before

    # a run that aligns nothing keeps the dataset it was to replace
    cv2.imwrite(str(_photos(tmp_path / "walls", 0) / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    assert main(["prepare-faces", str(tmp_path / "walls"), str(dst), "--size", "64", "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before

    assert main(["prepare-faces", str(small), str(dst), "--size", "64", "--overwrite"]) == 0
    items, crops = _dataset(dst)
    assert len(items) == 1 and crops == [items[0]["image"]]        # none of the first run's crops stay
    assert _leftovers(tmp_path) == []


def test_photos_under_the_output_are_never_taken(tmp_path):
    src = _photos(tmp_path / "src", 2)
    dst = src / "aligned"
    assert main(["prepare-faces", str(src), str(dst), "--size", "64"]) == 0
    assert main(["prepare-faces", str(src), str(dst), "--size", "64", "--overwrite"]) == 0
    items, crops = _dataset(dst)
    assert sorted(i["source"] for i in items) == [p.name for p in FACES[:2]]
    assert len(crops) == 2 and _leftovers(src) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_dataset(tmp_path, signum):
    if signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler):
        pytest.skip("the test runner handles this signal itself")
    src = tmp_path / "src"
    for n in range(3):    # copies: the run is still going when the first crop is written
        _photos(src / f"p{n}", len(FACES))
    dst = tmp_path / "data" / "out"      # its parent folder is made by the run, and removed with it

    def interrupt_after_the_first_crop():
        deadline = time.monotonic() + 120
        while not any(tmp_path.glob("data/**/images/*.jpg")) and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(os.getpid(), signum)     # as Ctrl-C or `kill` would, while crops are being written

    watcher = threading.Thread(target=interrupt_after_the_first_crop, daemon=True)
    watcher.start()
    code = main(["prepare-faces", str(src), str(dst), "--size", "64"])
    watcher.join()
    assert code == (130 if signum == signal.SIGINT else 143)
    assert not (tmp_path / "data").exists(), sorted(str(p) for p in (tmp_path / "data").rglob("*"))


def test_an_output_that_is_a_file_or_holds_other_files_is_refused_in_one_line(tmp_path, capsys):
    src = _photos(tmp_path / "src", 1)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    mine = _photos(tmp_path / "mine", 1)
    for dst, says in ((afile, "it is a file"), (afile / "sub", f"{afile} is a file"),
                      (mine, "holds files prepare-faces did not write")):
        for extra in ([], ["--overwrite"]):
            assert main(["prepare-faces", str(src), str(dst), "--size", "64", *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert says in err and len(err.splitlines()) == 1, err
    assert afile.read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == [FACES[0].name]
    assert main(["prepare-faces", str(src), str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_face_small_in_a_big_photo_is_taken_as_enrollment_takes_it(tmp_path):
    """A portrait from a few metres: the face is a quarter of a 2048² photo, which the face mesh alone does not
    see (its detector looks at 128²); enrollment finds it, and so must the dataset."""
    src = tmp_path / "src"
    src.mkdir()
    canvas = np.full((2048, 2048, 3), 200, np.uint8)
    canvas[100:612, 100:612] = cv2.imread(str(FACES[0]))
    cv2.imwrite(str(src / "far.jpg"), canvas)
    report = prepare_faces(src, tmp_path / "out", size=64, progress=False)
    assert report.written == 1 and not report.skipped

