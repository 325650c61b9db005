"""Bad command-line options are refused up front, in one line, with exit code 2 and nothing written:
before any slow work, before a progress bar, and whatever format the output's name asks for."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gramcast.cli import build_parser, main

from cli_checks import refused

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"


@pytest.fixture(scope="module")
def gca(tmp_path_factory):
    path = tmp_path_factory.mktemp("avatar") / "me.gca"
    assert main(["enroll", str(SAMPLE), "-o", str(path)]) == 0
    return path


def test_render_refuses_transparency_in_a_format_without_alpha_before_rendering(tmp_path, capsys, gca):
    refused(capsys, ["render", str(gca), "--background", "none", "-o", str(tmp_path / "x.jpg")], ".png or .webp")
    assert list(tmp_path.iterdir()) == []
    assert main(["render", str(gca), "--background", "none", "--size", "32", "-o", str(tmp_path / "x.webp")]) == 0
    assert Image.open(tmp_path / "x.webp").mode == "RGBA"


@pytest.fixture
def portraits(tmp_path):
    data = tmp_path / "portraits"
    data.mkdir()
    shutil.copy(SAMPLE, data / "solo.png")
    return data


def test_evaluate_refuses_unknown_methods_and_names_the_known_ones(tmp_path, capsys, portraits):
    out = tmp_path / "out"
    refused(capsys, ["evaluate", str(portraits), "--methods", "mesh,bogus", "--out", str(out)],
            "unknown method 'bogus'; give a comma-separated list of mesh, graminverter")
    refused(capsys, ["evaluate", str(portraits), "--methods", ",", "--out", str(out)], "no method given")
    assert not out.exists()


@pytest.mark.parametrize("count", ["0", "-1"])
def test_evaluate_refuses_a_max_below_one(tmp_path, capsys, portraits, count):
    out = tmp_path / "out"
    refused(capsys, ["evaluate", str(portraits), "--max", count, "--out", str(out)], f"--max {count}: give 1 or more")
    assert not out.exists()


def test_verbose_is_taken_after_every_command_too():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"enroll", "render", "orbit", "sample", "demo", "export-onnx", "evaluate", "serve"} <= set(commands)
    for name, command in commands.items():
        assert "-v, --verbose" in command.format_help(), name
    assert parser.parse_args(["info", "me.gca", "-v"]).verbose is True
    assert parser.parse_args(["-v", "info", "me.gca"]).verbose is True     # not overwritten by the command's
    assert parser.parse_args(["info", "me.gca"]).verbose is False


def test_verbose_after_the_command_shows_the_native_log_lines(tmp_path):
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(wall)
    cmd = [sys.executable, "-m", "gramcast.cli", "enroll", "-v", str(wall), "-o", str(tmp_path / "me.gca")]
    run = subprocess.run(cmd, capture_output=True, timeout=120, text=True)
    assert run.returncode == 2 and "no face found" in run.stderr and "unrecognized" not in run.stderr
    assert len(run.stderr.splitlines()) > 1       # mediapipe's own lines, which only -v lets through


def test_orbit_refuses_a_bad_size_before_its_progress_bar(tmp_path, capsys, gca):
    capsys.readouterr()
    assert main(["orbit", str(gca), "-o", str(tmp_path / "o.gif"), "--size", "0"]) == 2
    assert capsys.readouterr().err == "gramcast orbit: error: --size 0 is outside 16..4096 pixels: give a size in that range\n"
    assert not (tmp_path / "o.gif").exists()


def test_orbit_refuses_a_transparent_background_it_cannot_write(tmp_path, capsys, gca):
    capsys.readouterr()
    assert main(["orbit", str(gca), "-o", str(tmp_path / "o.gif"), "--background", "none"]) == 2
    assert "--background none: a turntable is written opaque" in capsys.readouterr().err
    assert not (tmp_path / "o.gif").exists()


@pytest.mark.parametrize("options,says", [
    (["--size", "0"], "--size 0 is outside 16..4096 pixels: give a size in that range"),
    (["--frames", "0"], "--frames 0: give 1 or more"),
])
def test_demo_refuses_bad_options_before_enrolling(tmp_path, capsys, options, says):
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path / "o")] + options) == 2
    assert capsys.readouterr().err == f"gramcast demo: error: {says}\n"
    assert not (tmp_path / "o").exists()


def test_export_onnx_names_the_option_of_a_bad_resolution(tmp_path, capsys, gca):
    refused(capsys, ["export-onnx", str(gca), "-o", str(tmp_path / "e.onnx"), "--resolution", "8"],
            "--resolution 8 is outside 16..4096 pixels")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options,says", [
    (["--yaws=nan,0"], "--yaws nan: give a number of radians"),
    (["--yaws=0,inf"], "--yaws inf: give a number of radians"),
    (["--yaws=-2,0"], "--yaws -2.0: give radians within ±1.57"),
    (["--pitch", "9"], "--pitch 9.0: give radians within ±1.57"),
])
def test_sample_refuses_angles_as_render_does(tmp_path, capsys, options, says):
    refused(capsys, ["sample", "-o", str(tmp_path / "s.png")] + options, says)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,says", [
    (["enroll", str(SAMPLE), "-o", "{tmp}/me.png"], "give a name ending in .gca, e.g. {tmp}/me.gca"),
    (["enroll", str(SAMPLE), "-o", "{tmp}/me"], "give a name ending in .gca"),
    (["export-onnx", "{gca}", "-o", "{tmp}/e.png"], "give a name ending in .onnx, e.g. {tmp}/e.onnx"),
])
def test_outputs_must_be_named_for_what_is_written_in_them(tmp_path, capsys, gca, command, says):
    fill = lambda s: s.format(tmp=tmp_path, gca=gca)  # noqa: E731
    refused(capsys, [fill(a) for a in command], fill(says))
    assert list(tmp_path.iterdir()) == []


def test_enroll_refuses_weights_under_the_mesh_method(tmp_path, capsys):
    refused(capsys, ["enroll", str(SAMPLE), "-o", str(tmp_path / "q.gca"), "--weights", "/nonexistent"],
            "--weights applies to --method graminverter only")
    assert list(tmp_path.iterdir()) == []


def test_demo_with_a_photo_that_does_not_enroll_leaves_no_folder(tmp_path, capsys):
    faceless = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 180, np.uint8)).save(faceless)
    out = tmp_path / "out"
    assert main(["demo", "--image", str(faceless), "--out", str(out)]) == 2
    assert "no face found" in capsys.readouterr().err and not out.exists()
