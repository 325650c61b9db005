"""The command line's stderr: the native libraries' log lines stay off it, everything else passes."""
import subprocess
import sys
import textwrap

import numpy as np


def test_filtered_stderr_drops_native_log_lines_and_keeps_the_rest_in_order():
    script = textwrap.dedent('''
        import os, sys
        from gramcast.cli.native_logs import filtered_stderr
        with filtered_stderr():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            print("first", file=sys.stderr, flush=True)
            os.write(2, b"W0000 00:00:1796426369.052374   10837 feedback_manager.cc:114] Feedback manager requires\\n")
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"E1204 23:01:02.123456  42 graph.cc:7] a glog line\\nsecond, written with a native one\\n")
            print("third", file=sys.stderr)
        os.write(2, b"W0000 00:00:1.0  1 after.cc:1] after the block: kept\\n")
    ''')
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.decode().splitlines() == ["first", "second, written with a native one", "third",
                                                "W0000 00:00:1.0  1 after.cc:1] after the block: kept"]


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
