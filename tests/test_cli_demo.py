"""The quickstart's main job through the CLI, and atomic output writing."""
import numpy as np
import pytest
from PIL import Image

from gramcast.cli import main
from gramcast.errors import OutputPathError
from gramcast.media_io import save_animation, save_image


def test_demo_enrolls_the_sample_and_writes_a_turntable(tmp_path, capsys):
    from gramcast.avatar import Avatar

    assert main(["demo", "--out", str(tmp_path / "out"), "--frames", "4", "--size", "64"]) == 0
    assert Avatar.load(tmp_path / "out" / "avatar.gca").meta["method"] == "mesh"
    gif = Image.open(tmp_path / "out" / "orbit.gif")
    assert gif.n_frames == 4 and gif.size == (64, 64)
    frames = []
    for i in range(4):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    assert np.abs(frames[1] - frames[0]).mean() > 0.1  # the views differ as the camera turns
    assert Image.open(tmp_path / "out" / "frontal.png").size == (512, 512)
    assert "gramcast serve --avatar" in capsys.readouterr().out


def test_demo_into_a_file_or_a_full_disk_fails_with_one_line(tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(["demo", "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gramcast demo: error: cannot make the output folder {taken}: File exists; give another --out"]
    # what the file system refuses later (here a full disk while the avatar is written) is one line too
    import errno

    from gramcast.avatar import Avatar

    def full_disk(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Avatar, "save", full_disk)
    assert main(["demo", "--out", str(tmp_path / "o"), "--frames", "2", "--size", "32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gramcast demo: error: No space left on device (")


def test_demo_with_a_faceless_image_fails_with_one_line(tmp_path, capsys):
    bad = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(bad)
    assert main(["demo", "--out", str(tmp_path / "o"), "--image", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no face found" in err[0]


def test_outputs_into_missing_folders_or_unknown_formats_are_refused(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(OutputPathError, match="does not exist"):
        save_image(tmp_path / "nope" / "a.png", img)
    with pytest.raises(OutputPathError, match="unsupported"):
        save_animation(tmp_path / "a.avi", [img])
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
