"""Where the commands write, and what: special files at the output name (links, pipes, devices), names that
are not files ('-', 'folder/'), the folder asked before the work, animation rates and delays, frames encoded
as they are rendered, closed stdout or stderr, and the command line's smaller promises."""
import math
import os
import socket
import stat
import subprocess
import sys
import threading
import tracemalloc

import av
import numpy as np
import pytest
from PIL import Image

from gramcast.cli import main
from gramcast.errors import InvalidArgumentError, OutputPathError
from gramcast.media_io import check_output_path, save_animation, save_image

from cli_checks import interrupted_at, refused


@pytest.fixture(scope="module")
def gca(tmp_path_factory):
    """A tiny avatar: a few milliseconds a frame at 32²."""
    import gramcast.avatar
    from gramcast.model import GRAMModel

    model = GRAMModel.from_config("tiny")
    avatar = gramcast.avatar.bake_model(model, model.sample_ws(1, seed=0), geometry_resolution=32,
                                        texture_resolution=64)
    path = tmp_path_factory.mktemp("avatar") / "me.gca"
    avatar.save(path)
    return path


@pytest.fixture
def fast_frames(monkeypatch):
    """Renders return at once (a flat grey frame, fully opaque): for tests of what the commands do with
    frames, not of the frames."""
    from gramcast.avatar import Renderer

    calls = []

    def render_rgba(self, pose, size=256):
        calls.append(pose)
        return np.full((size, size, 3), 90 + len(calls) % 100, np.uint8), np.ones((size, size), np.float32)

    monkeypatch.setattr(Renderer, "render_rgba", render_rgba)
    return calls


def _device(path) -> bool:
    """A null device of our own at ``path`` (False where this process may not make one)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return True
    except (PermissionError, OSError):
        return False


# ---------------------------------------------------------------- what is already at the output's name
def test_a_symlink_keeps_its_link_and_its_target_is_replaced(tmp_path, capsys, gca):
    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "view.png"
    link.symlink_to("real.png")
    assert main(["render", str(gca), "--size", "32", "-o", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == "real.png"
    assert Image.open(target).size == (32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.png", "view.png"]


def test_a_character_device_is_written_through_and_stays_one(tmp_path, capsys, gca):
    null, null_gif = tmp_path / "null", tmp_path / "null.gif"
    if not (_device(null) and _device(null_gif)):
        pytest.skip("cannot make a device node here")
    assert main(["render", str(gca), "--size", "32", "-o", str(null)]) == 0
    assert main(["orbit", str(gca), "--size", "32", "--frames", "2", "-o", str(null_gif)]) == 0
    for path in (null, null_gif):
        assert stat.S_ISCHR(os.lstat(path).st_mode), path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "null.gif"]     # no temp file left either


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".webm"])
def test_a_fifo_is_written_through_to_its_reader(tmp_path, suffix):
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    frames = [np.full((32, 32, 3), v, np.uint8) for v in (0, 120, 240)]
    assert save_animation(fifo, frames, fps=3) == 3
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    reader.join(timeout=30)
    copy = tmp_path / f"copy{suffix}"
    copy.write_bytes(got[0])                      # an MP4 into a pipe is fragmented: no seeking back
    with av.open(str(copy)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


def test_folders_and_sockets_at_the_output_name_are_refused_in_one_line(tmp_path, capsys, gca):
    (tmp_path / "d.png").mkdir()
    refused(capsys, ["render", str(gca), "--size", "32", "-o", str(tmp_path / "d.png")], "it is a folder")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.png"))
        refused(capsys, ["render", str(gca), "--size", "32", "-o", str(tmp_path / "s.png")], "it is a socket")
    finally:
        sock.close()
    assert stat.S_ISSOCK(os.lstat(tmp_path / "s.png").st_mode) and (tmp_path / "d.png").is_dir()


def test_a_replaced_file_keeps_its_permissions(tmp_path, capsys, gca):
    out = tmp_path / "private.png"
    out.write_bytes(b"old")
    out.chmod(0o600)
    assert main(["render", str(gca), "--size", "32", "-o", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and Image.open(out).size == (32, 32)


# ---------------------------------------------------------------- names that are not files
@pytest.mark.parametrize("command", [
    ["render", "{gca}", "--size", "32"], ["orbit", "{gca}", "--size", "32", "--frames", "2"],
    ["export-onnx", "{gca}"], ["sample"], ["enroll", "photo.jpg"]])
def test_dash_is_refused_alike_by_every_command(tmp_path, capsys, monkeypatch, gca, command):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(gca=gca) for a in command] + ["-o", "-"]
    line = refused(capsys, argv, "writing to stdout ('-') is not supported; give a file name")
    assert "usage" not in line and not (tmp_path / "-").exists()


@pytest.mark.parametrize("argv", [["render", "{gca}", "--size", "32", "-o", "nosuch/"],
                                  ["orbit", "{gca}", "--size", "32", "--frames", "2", "-o", "anim.gif/"]])
def test_a_name_ending_in_a_separator_names_a_folder_and_is_refused(tmp_path, capsys, monkeypatch, gca, argv):
    monkeypatch.chdir(tmp_path)
    refused(capsys, [a.format(gca=gca) for a in argv], "names a folder; give a file name")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputPathError, match="names a folder"):
        save_image("view.png/", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_of_the_folder_is_named_as_a_file(tmp_path, capsys, gca):
    blocker = tmp_path / "hostname"
    blocker.write_text("x")
    refused(capsys, ["render", str(gca), "--size", "32", "-o", str(blocker / "x.png")],
            f"{blocker} is a file, not a folder")
    with pytest.raises(OutputPathError, match=f"{blocker} is a file, not a folder"):
        check_output_path(blocker / "deeper" / "x.png")


# ---------------------------------------------------------------- the folder is asked before the work
def test_the_folder_is_asked_by_making_a_file_before_any_frame(tmp_path, capsys, monkeypatch, gca):
    """Root passes access(W_OK) where a file system refuses new files (/proc): only making one tells."""
    import errno
    import tempfile

    made = []

    def refusing_mkstemp(*args, **kwargs):
        made.append(kwargs.get("dir"))
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refusing_mkstemp)
    rendered = []
    from gramcast.avatar import Renderer
    monkeypatch.setattr(Renderer, "render_rgba", lambda *a, **k: rendered.append(1))
    refused(capsys, ["orbit", str(gca), "--frames", "2", "--size", "32", "-o", str(tmp_path / "o.gif")],
            "is on a read-only file system")
    assert made and not rendered
    with pytest.raises(OutputPathError, match="read-only file system"):
        check_output_path(tmp_path / "x.png")


# ---------------------------------------------------------------- rates and delays
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
@pytest.mark.parametrize("fps,frames", [(2.5, 5), (29.97, 30), (0.5, 3)])
def test_video_lasts_frames_over_fps_at_a_fractional_or_slow_rate(tmp_path, suffix, fps, frames):
    path = tmp_path / f"v{suffix}"
    save_animation(path, [np.full((32, 32, 3), 10 * i, np.uint8) for i in range(frames)], fps=fps)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert sum(1 for _ in c.decode(video=0)) == frames
        assert float(stream.average_rate) == pytest.approx(fps, rel=1e-4)
        assert c.duration / 1e6 == pytest.approx(frames / fps, abs=2e-3)


def _gif_delays(path) -> list[int]:
    with Image.open(path) as im:
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info["duration"])
    return delays


@pytest.mark.parametrize("fps,frames", [(24, 24), (12, 7), (30, 30), (7.5, 15)])
def test_gif_delays_are_whole_hundredths_that_add_up_to_frames_over_fps(tmp_path, fps, frames):
    path = tmp_path / "a.gif"
    save_animation(path, [np.full((16, 16, 3), 15 * i, np.uint8) for i in range(frames)], fps=fps)
    delays = _gif_delays(path)
    assert len(delays) == frames and all(d % 10 == 0 and d >= 20 for d in delays), delays
    assert abs(sum(delays) - 1000 * frames / fps) <= 5
    assert max(delays) - min(delays) <= 10          # spread evenly (4 and 5 hundredths alternate at 24 fps)


def test_gif_faster_than_50_fps_is_refused_with_what_to_use(tmp_path, capsys, gca):
    with pytest.raises(InvalidArgumentError, match=r"\.mp4 or \.webm"):
        save_animation(tmp_path / "a.gif", [np.zeros((16, 16, 3), np.uint8)] * 2, fps=60)
    refused(capsys, ["orbit", str(gca), "--fps", "120", "--size", "32", "-o", str(tmp_path / "o.gif")],
            "write .mp4 or .webm")
    assert list(tmp_path.iterdir()) == []


def test_gif_frames_are_the_frames_given(tmp_path):
    """Each frame is written where it differs from the one before, with a palette of its own."""
    rng = np.random.default_rng(0)
    frames = [np.full((24, 24, 3), 200, np.uint8) for _ in range(4)]
    frames[1][5:9, 3:20] = (10, 20, 30)
    frames[3] = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) // 64 * 64       # 64 colours: exact in a GIF
    path = tmp_path / "a.gif"
    assert save_animation(path, frames, fps=10) == 4
    with Image.open(path) as im:
        for i, frame in enumerate(frames):
            im.seek(i)
            assert np.array_equal(np.asarray(im.convert("RGB")), frame), i


def test_odd_sizes_are_refused_for_video_not_cropped(tmp_path, capsys, gca):
    refused(capsys, ["orbit", str(gca), "--size", "65", "--frames", "2", "-o", str(tmp_path / "o.mp4")],
            "even width and height")
    with pytest.raises(InvalidArgumentError, match="65x65"):
        save_animation(tmp_path / "o.webm", [np.zeros((65, 65, 3), np.uint8)], fps=5)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- frames encoded as they are rendered
def test_orbit_encodes_each_frame_as_it_is_rendered(tmp_path, capsys, gca, fast_frames):
    """200 frames of 128² (9.8 MB) are never all in memory at once."""
    tracemalloc.start()
    try:
        assert main(["orbit", str(gca), "--frames", "200", "--size", "128", "-o", str(tmp_path / "o.mp4")]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(fast_frames) == 200 and peak < 4e6, peak
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 200


def test_frames_have_an_upper_bound(tmp_path, capsys, monkeypatch, gca):
    from gramcast.avatar import Renderer

    def no_work(*args, **kwargs):
        raise AssertionError("refused after the work had begun")

    monkeypatch.setattr(Renderer, "render_rgba", no_work)
    monkeypatch.setattr("gramcast.enrollment.enroll", no_work)
    refused(capsys, ["orbit", str(gca), "--frames", "100000", "-o", str(tmp_path / "o.gif")], "give at most 3600")
    refused(capsys, ["demo", "--frames", "100000", "--out", str(tmp_path / "d")], "give at most 3600")
    assert list(tmp_path.iterdir()) == []


def test_turntable_poses_are_distinct_even_for_few_frames():
    from gramcast.cli.avatar_cmd import orbit_poses

    for n in range(1, 50):
        poses = orbit_poses(n, 0.5, 0.15)
        assert len({(round(y, 9), round(p, 9)) for y, p in poses}) == n, n


def test_orbit_reports_the_frames_it_wrote_in_words_that_agree(tmp_path, capsys, gca, fast_frames):
    assert main(["orbit", str(gca), "--frames", "1", "--size", "32", "-o", str(tmp_path / "o.gif")]) == 0
    assert "(1 frame," in capsys.readouterr().out
    assert main(["orbit", str(gca), "--frames", "2", "--size", "32", "-o", str(tmp_path / "o.gif")]) == 0
    assert "(2 frames," in capsys.readouterr().out
    with Image.open(tmp_path / "o.gif") as im:
        assert im.n_frames == 2


# ---------------------------------------------------------------- closed stdout or stderr
@pytest.mark.parametrize("closed", [">&-", "2>&-"])
def test_commands_work_with_stdout_or_stderr_closed(tmp_path, gca, closed):
    out = tmp_path / "o.gif"
    cmd = f'"$@" {closed}'
    done = subprocess.run(["bash", "-c", cmd, "bash", sys.executable, "-m", "gramcast.cli", "orbit", str(gca),
                           "--frames", "2", "--size", "32", "-o", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout, done
    with Image.open(out) as im:
        assert im.n_frames == 2


def test_a_refusal_with_stderr_closed_exits_2_and_prints_nothing_on_stdout(tmp_path, gca):
    done = subprocess.run(["bash", "-c", '"$@" 2>&-', "bash", sys.executable, "-m", "gramcast.cli", "render",
                           str(gca), "--size", "0", "-o", str(tmp_path / "x.png")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""


# ---------------------------------------------------------------- demo
def _tiny_enroll(gca, monkeypatch, warnings=()):
    from gramcast.avatar import Avatar

    def enroll(image, **kwargs):
        avatar = Avatar.load(gca)
        avatar.meta["warnings"] = list(warnings)
        return avatar

    monkeypatch.setattr("gramcast.enrollment.enroll", enroll)


def test_demo_prints_enrollments_warnings_as_enroll_does(tmp_path, capsys, monkeypatch, gca):
    _tiny_enroll(gca, monkeypatch, ["the photo is dark: more light makes a better avatar"])
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "2", "--size", "32"]) == 0
    assert "gramcast demo: warning: the photo is dark: more light makes a better avatar" in capsys.readouterr().err


def test_demo_stopped_during_the_turntable_leaves_no_folder(tmp_path, capsys, monkeypatch, gca):
    from gramcast.avatar import Renderer

    _tiny_enroll(gca, monkeypatch)
    calls = []
    monkeypatch.setattr(Renderer, "render_rgba", interrupted_at(2, calls))
    out = tmp_path / "new" / "dir"
    assert main(["demo", "--out", str(out), "--frames", "4", "--size", "32"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "gramcast demo: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_demo_into_a_folder_that_was_there_removes_only_what_it_made(tmp_path, capsys, monkeypatch, gca):
    from gramcast.avatar import Renderer

    _tiny_enroll(gca, monkeypatch)
    (tmp_path / "mine.txt").write_text("keep")

    def broken(self, pose, size=256):
        raise KeyboardInterrupt

    monkeypatch.setattr(Renderer, "render_rgba", broken)
    assert main(["demo", "--out", str(tmp_path), "--frames", "2", "--size", "32"]) == 130
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


# ---------------------------------------------------------------- progress bars
def test_no_progress_bar_where_stderr_is_not_a_terminal(tmp_path, capsys, gca, fast_frames):
    assert main(["orbit", str(gca), "--frames", "3", "--size", "32", "-o", str(tmp_path / "o.gif")]) == 0
    assert capsys.readouterr().err == ""


def test_the_interrupted_line_comes_after_the_progress_bar(tmp_path, capsys, monkeypatch, gca):
    import gramcast.cli as cli
    from gramcast.avatar import Renderer

    # raising=False: absent before the fix, which drew the bar whatever stderr was
    monkeypatch.setattr(cli, "_is_terminal", lambda stream: True, raising=False)
    calls = []
    monkeypatch.setattr(Renderer, "render_rgba", interrupted_at(3, calls))
    assert main(["orbit", str(gca), "--frames", "6", "--size", "32", "-o", str(tmp_path / "o.gif")]) == 130
    err = capsys.readouterr().err
    assert "orbit:" in err and err.endswith("\ngramcast orbit: interrupted\n"), repr(err)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the command line's smaller promises
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, gca):
    line = refused(capsys, ["render", str(gca), "--size", "abc", "-o", str(tmp_path / "x.png")],
                   "argument --size: invalid int value: 'abc'")
    assert "--help" in line
    refused(capsys, ["orbit", str(gca)], "the following arguments are required: -o/--out")


@pytest.mark.parametrize("name", ["x.pdf", "x.bmp", "x.tiff"])
def test_render_writes_only_the_image_formats_it_lists(tmp_path, capsys, gca, name):
    refused(capsys, ["render", str(gca), "--size", "32", "-o", str(tmp_path / name)], "use .png, .jpg or .webp")
    assert list(tmp_path.iterdir()) == []


def test_help_shows_defaults_and_every_accepted_value():
    from gramcast.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    render = " ".join(commands["render"].format_help().split())
    for text in ("radians (default 0.0)", "(default 512)", "grey", "green", "'none'", ".jpeg", ".webp"):
        assert text in render, text
    orbit = " ".join(commands["orbit"].format_help().split())
    for text in ("(default 48)", "(default 256;", "default 24.0)", "1 to 3600"):
        assert text in orbit, text
    demo = " ".join(commands["demo"].format_help().split())
    assert "(default 48)" in demo and "(default 256; frontal.png is 512)" in demo
    assert "or 2 to 256" in " ".join(commands["export-onnx"].format_help().split())


@pytest.mark.parametrize("count", ["1000", "257", "1"])
def test_export_onnx_bounds_edge_samples(tmp_path, capsys, gca, count):
    refused(capsys, ["export-onnx", str(gca), "-o", str(tmp_path / "m.onnx"), "--edge-samples", count],
            f"--edge-samples {count}: give 0 (off) or 2 to 256 samples")
    assert list(tmp_path.iterdir()) == []


def test_sample_says_one_identity(tmp_path, capsys):
    assert main(["sample", "-n", "1", "--yaws=0", "-o", str(tmp_path / "s.png")]) == 0
    assert "(1 identity x 1 yaw)" in capsys.readouterr().out


def test_a_slow_rate_is_reported_with_its_digits(tmp_path, capsys, gca, fast_frames):
    out = tmp_path / "o.mp4"
    assert main(["orbit", str(gca), "--frames", "3", "--fps", "2.5", "--size", "32", "-o", str(out)]) == 0
    assert "(3 frames, 1.2 s at 2.5 fps)" in capsys.readouterr().out
    with av.open(str(out)) as c:
        assert math.isclose(c.duration / 1e6, 1.2, abs_tol=2e-3)
