"""The command line's stderr: the native libraries' log lines stay off it, everything else passes."""
import select
import subprocess
import sys

import numpy as np
import torch
import pytest

# Run in a child process: it rewires descriptor 2, which pytest's own capture also uses.
SCRIPT = r'''
import os, sys
from gramcast.cli.native_logs import filtered_stderr
with filtered_stderr():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    print("first", file=sys.stderr, flush=True)
    os.write(2, b"W0000 00:00:1796426369.052374   10837 feedback_manager.cc:114] Feedback manager requires\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"E1204 23:01:02.123456  42 graph.cc:7] a glog line\nsecond, written with a native one\n")
    print("third", file=sys.stderr)
    os.write(2, b"WARNING gramcast.x: our own log lines pass\n")
    os.write(2, b"W0000 00:00:17964.1   10837 split.cc:1")      # a native line in two writes
    os.write(2, b"] the rest of it\n")
    os.write(2, b"\r 10%|#")                                      # a progress bar: no newline, and
    sys.stderr.write("<bar seen>")                               # each redraw is out before the next
    sys.stderr.flush()
    os.write(2, b"I0000 00:00:1.5   7 mid.cc:3] a native line in the middle of the bar's\n")
    os.write(2, b"\r100%|##########\n")
os.write(2, b"W0000 00:00:1.0  1 after.cc:1] after the block: kept\n")
'''


def test_filtered_stderr_drops_native_log_lines_and_keeps_the_rest_in_order():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.decode().split("\n") == [
        "first", "second, written with a native one", "third", "WARNING gramcast.x: our own log lines pass",
        "\r 10%|#<bar seen>\r100%|##########", "W0000 00:00:1.0  1 after.cc:1] after the block: kept", ""]


def test_a_progress_bar_line_goes_out_before_its_newline():
    """The filter does not hold a line that cannot be native noise until it ends."""
    script = r'''
import os, sys, time
from gramcast.cli.native_logs import filtered_stderr
with filtered_stderr():
    os.write(2, b"\r 50%|#####")
    time.sleep(0.5)
    os.write(1, b"stdout after the bar\n")
    time.sleep(3600)
'''
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"stdout after the bar\n"
        ready, _, _ = select.select([proc.stderr], [], [], 10.0)
        assert ready and proc.stderr.read1(64) == b"\r 50%|#####"   # out already, while the child still runs
    finally:
        proc.kill()
        proc.wait()


def test_a_failed_enroll_prints_its_one_line_and_verbose_shows_the_native_ones(tmp_path):
    import cv2

    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((300, 300, 3), 128, np.uint8))
    cmd = [sys.executable, "-m", "gramcast.cli", "enroll", str(wall), "-o", str(tmp_path / "me.gca")]
    run = subprocess.run(cmd, capture_output=True, timeout=120, text=True)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"gramcast enroll: error: no face found in {wall}: use a photo in which one "
                                       "face is clearly visible (roughly frontal, eyes open, evenly lit, not cut "
                                       "off by the border)"]
    verbose = subprocess.run([sys.executable, "-m", "gramcast.cli", "-v"] + cmd[3:], capture_output=True,
                             timeout=120, text=True)
    assert verbose.returncode == 2 and len(verbose.stderr.splitlines()) > 1   # mediapipe's own lines too


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, verbose):
    """`gramcast ... | head -1`: output to a pipe nobody reads any more is dropped, with no traceback."""
    import os

    import torch

    from gramcast.avatar import Avatar

    gca = tmp_path / "a.gca"
    Avatar(torch.zeros(1, 8, 8), torch.rand(1, 4, 16, 16), 0.14, {"method": "test"}).save(gca)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "gramcast.cli", *verbose, "info", str(gca)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.returncode == 141           # as a shell reports a command its pipe's reader left


# A command stopped by SIGTERM (a service manager, `kill`) while it writes its output: the file is written by
# Path.write_bytes inside media_io.atomic_output, made slow here so that the signal lands mid-write.
TERMINATED = r'''
import pathlib, sys, time
import gramcast.cli as cli
write = pathlib.Path.write_bytes
def slow_write(self, data):
    write(self, data[: len(data) // 2])
    print("writing", flush=True)
    time.sleep(60)
pathlib.Path.write_bytes = slow_write
sys.exit(cli.main(sys.argv[1:]))
'''


def test_a_command_terminated_mid_write_leaves_no_file_and_exits_143(tmp_path):
    from gramcast.avatar import Avatar

    gca, out = tmp_path / "a.gca", tmp_path / "out"
    out.mkdir()
    Avatar(torch.zeros(1, 8, 8), torch.rand(1, 4, 16, 16), 0.25, {"method": "test"}).save(gca)
    proc = subprocess.Popen([sys.executable, "-c", TERMINATED, "export-onnx", str(gca), "-o", str(out / "m.onnx"),
                             "--resolution", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [p.name for p in out.iterdir()]               # the temp file, half written
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "export-onnx: terminated" in err, (proc.returncode, err[-2000:])
    assert list(out.iterdir()) == []


def test_filtered_stderr_works_where_python_has_no_stderr():
    """Python sets sys.stderr to None when started with descriptor 2 closed (`2>&-`)."""
    script = "import sys\nfrom gramcast.cli.native_logs import filtered_stderr\nsys.stderr = None\n" \
             "with filtered_stderr():\n    print('inside')\n"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "inside\n", run.stderr
