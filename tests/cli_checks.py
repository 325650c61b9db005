"""Checks the command-line tests share."""
from __future__ import annotations

import numpy as np

from gramcast.cli import main


def refused(capsys, argv, says) -> str:
    """Runs ``argv``; it must exit 2 with exactly one line on stderr that contains ``says``."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"gramcast {argv[0]}: error: ") and says in err[0], captured.err
    return err[0]


def interrupted_at(call: int, calls: list):
    """A stand-in for ``Renderer.render_rgba`` that raises KeyboardInterrupt (Ctrl-C) at its ``call``-th call,
    recording each pose in ``calls``; earlier calls return a black opaque frame."""
    def render_rgba(self, pose, size=256):
        calls.append(pose)
        if len(calls) == call:
            raise KeyboardInterrupt
        return np.zeros((size, size, 3), np.uint8), np.ones((size, size), np.float32)

    return render_rgba
