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

#: absl / glog lines ("W0000 00:00:1796426369.052374   10715 file.cc:114] ..."), and TensorFlow Lite's
#: and absl's own start-up notices. Found anywhere in the stream: mediapipe's threads also write in the
#: middle of a progress bar's line (which has no newline until it ends).
_ABSL = rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\n]+\] "
_LITERALS = (b"INFO: Created TensorFlow Lite", b"WARNING: All log messages before absl::InitializeLog() is called")
NATIVE_NOISE = re.compile(b"|".join([_ABSL] + [re.escape(x) for x in _LITERALS]))
# what the end of the stream may hold of a noise line's beginning (held back until the next bytes say)
_ABSL_START = re.compile(rb"[IWEF](?:\d{0,3}|\d{4}(?: [\d:.]*(?: +\d*(?: [^\]\n]*)?)?)?)")
_LOOKBACK = 200


def _noise_may_start(tail: bytes) -> bool:
    return bool(_ABSL_START.fullmatch(tail)) or any(x.startswith(tail) for x in _LITERALS)


def _held_from(buffer: bytes) -> int:
    """Where the longest tail of ``buffer`` that may begin a noise line starts (``len(buffer)``: none)."""
    lo = max(buffer.rfind(b"\n") + 1, len(buffer) - _LOOKBACK)
    for i in range(lo, len(buffer)):
        if buffer[i] in b"IWEF" and _noise_may_start(buffer[i:]):
            return i
    return len(buffer)


def _clean(buffer: bytes, noise: re.Pattern, final: bool) -> tuple[bytes, bytes]:
    """(what can go out now, what to keep): complete noise lines removed, a possible beginning held."""
    out = []
    while True:
        m = noise.search(buffer)
        if m is None:
            break
        end = buffer.find(b"\n", m.end())
        if end < 0:                     # an unfinished noise line: out up to it, keep the rest
            if final:
                return b"".join(out) + buffer[:m.start()], b""
            return b"".join(out) + buffer[:m.start()], buffer[m.start():]
        out.append(buffer[:m.start()])
        buffer = buffer[end + 1:]
    cut = len(buffer) if final else _held_from(buffer)
    return b"".join(out) + buffer[:cut], buffer[cut:]


def _forward(read_fd: int, write_fd: int, noise: re.Pattern) -> None:
    """Copy ``read_fd`` to ``write_fd`` without the lines ``noise`` matches, as the bytes come: only a tail
    that may begin such a line waits for the next bytes (a progress bar's redraws go out at once)."""
    kept = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        for chunk in iter(lambda: pipe.read(65536), b""):
            out, kept = _clean(kept + chunk, noise, final=False)
            if out and not _write(write_fd, out):
                return
        out, _ = _clean(kept, noise, final=True)
        if out:
            _write(write_fd, out)


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
        if sys.stderr is not None:     # None: Python found descriptor 2 closed when it started
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
