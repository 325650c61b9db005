"""Keep the native libraries' log chatter off the command line's stderr.

mediapipe's C++ graphs (absl logging, TensorFlow Lite) write lines such as ``W0000 00:00:... ] Feedback
manager requires ...`` straight to file descriptor 2 on every graph they build, whatever
``GLOG_minloglevel`` says, so a failed ``gramcast enroll`` printed its one line of error among half a dozen
of theirs. ``filtered_stderr`` routes descriptor 2 through a pipe for the duration of a command and drops
those lines; everything else (Python's own output, tracebacks) passes through in order.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

__all__ = ["NATIVE_NOISE", "filtered_stderr"]

#: absl / glog lines ("W0000 00:00:1796426324.519574   10715 file.cc:114] ..."), and TensorFlow Lite's
#: and absl's own start-up notices.
NATIVE_NOISE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] "
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)")


#: How a line that may be native noise starts; other lines go out as they come, unfinished ones too (a
#: progress bar redraws its line with "\r" and no newline).
_NOISE_START = re.compile(rb"[IWEF]\d{4} |INFO: |WARNING: ")
_START_LEN = len(b"WARNING: ")


def _may_start_noise(head: bytes) -> bool:
    """Could a line beginning with ``head`` (fewer than ``_START_LEN`` bytes seen so far) be noise?"""
    pad = {b"I": b"INFO: ", b"W": b"WARNING: "}.get(head[:1], b"")
    return (bool(re.fullmatch(rb"[IWEF]\d{0,4}", head)) or pad.startswith(head)) if head else True


def _forward(read_fd: int, write_fd: int, noise: re.Pattern) -> None:
    """Copy ``read_fd`` to ``write_fd`` without the lines ``noise`` matches. A line is decided by its first
    bytes: one that cannot be noise passes at once; one that may be is held until its newline."""
    line = b""          # the current line's bytes held back so far
    state = "start"     # "start": undecided, "pass": goes straight out, "hold": kept until its end
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        for chunk in iter(lambda: pipe.read(65536), b""):
            out = []
            for piece in re.split(rb"(?<=\n)", chunk):
                if not piece:
                    continue
                ended = piece.endswith(b"\n")
                if state == "pass":
                    out.append(piece)
                else:
                    line += piece
                    if state == "start":
                        head = line[:_START_LEN]
                        if _NOISE_START.match(head):
                            state = "hold"
                        elif len(head) >= _START_LEN or ended or not _may_start_noise(head):
                            state = "pass"
                    if state == "pass":
                        out.append(line)
                        line = b""
                    elif ended:             # a held line, complete: out unless it is noise
                        if not noise.match(line):
                            out.append(line)
                        line = b""
                if ended:
                    state = "start"
            if out and not _write(write_fd, b"".join(out)):
                return
        if line and not noise.match(line):
            _write(write_fd, line)


def _write(fd: int, data: bytes) -> bool:
    try:
        os.write(fd, data)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NATIVE_NOISE):
    """Within the block, lines written to descriptor 2 that match ``noise`` are dropped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError):      # no descriptor 2 to work with: leave things as they are
        yield
        return
    os.dup2(write_fd, 2)
    os.close(write_fd)
    reader = threading.Thread(target=_forward, args=(read_fd, saved, noise), name="gramcast-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)              # closes the pipe's last write end here: the reader sees its end
        reader.join(timeout=2.0)       # (a child process still holding it keeps the pipe open: do not wait)
        if not reader.is_alive():      # else it still writes to `saved`: leave that descriptor open
            os.close(saved)
