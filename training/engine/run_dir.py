"""The run folder (``--out``) a training run owns while it runs.

``claim_run_dir`` makes the folder, takes an exclusive lock on it for the run's life (two runs writing
one ``state.pt`` would each overwrite the other's work), refuses to start a fresh run over a saved one,
and removes the temp files a killed run left. Only rank 0 creates and locks; every rank checks for a
saved run, so all ranks stop with the same error.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
from contextlib import contextmanager
from pathlib import Path

from gramcast.errors import CheckpointError, GramcastError, OutputPathError
from gramcast.training.engine.checkpoint import STATE_FILE, load_state

LOCK_FILE = ".gramcast-train.lock"
#: What ``atomic_output`` names its temp files: ``.NAME.<8 random>.SUFFIX`` beside ``NAME.SUFFIX``.
_TEMP = re.compile(r"^\.[^/]+\.[A-Za-z0-9_]{8}\.[A-Za-z0-9]+$")


class RunBusyError(GramcastError):
    """Another process holds the run folder's lock."""


def make_run_dir(path: Path) -> bool:
    """Create the run folder; True when this call made it. What the OS refuses is an OutputPathError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"--out {path}: it is a file, not a folder; give a folder for the run")
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True)
    except FileExistsError:     # a file where a parent folder should be, or a run that made it just now
        if not path.is_dir():
            raise OutputPathError(f"--out {path}: a file is in the way of this folder; give another --out") \
                from None
        return False
    except NotADirectoryError:
        raise OutputPathError(f"--out {path}: a file is in the way of this folder; give another --out") from None
    except OSError as exc:
        raise OutputPathError(f"--out {path}: cannot create this folder ({exc.strerror}); "
                              "give a writable location") from None
    return True


def lock_run_dir(path: Path):
    """An open lock file holding an exclusive lock on the run folder (released when closed)."""
    lock = Path(path) / LOCK_FILE
    try:     # the first file the run writes: a folder it cannot write fails here, not at the first save
        if not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputPathError(f"--out {path}: cannot write in this folder ({exc.strerror}); "
                              "give a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunBusyError(f"--out {path}: another run is training in this folder; wait for it to end, "
                               "or give another --out") from None
        raise OutputPathError(f"--out {path}: cannot lock this folder ({exc.strerror})") from None
    return os.fdopen(fd, "r+")


def saved_run_refusal(path: Path, resume: bool) -> str | None:
    """Why a fresh run may not start in ``path`` (it holds a saved run and --resume was not given)."""
    if resume or not (Path(path) / STATE_FILE).exists():
        return None
    try:
        step = int(load_state(path)["step"])
    except CheckpointError:
        return f"--out {path} holds a damaged {STATE_FILE}: delete it to start afresh there, or give another --out"
    return f"--out {path} holds a run at step {step}: --resume continues it; another --out starts afresh"


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temp files of writes a killed run never finished; returns them. Call holding the lock."""
    stale = [p for p in Path(path).iterdir() if p.is_file() and p.name != LOCK_FILE and _TEMP.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def claim_run_dir(path: Path, resume: bool, is_main: bool = True):
    """Hold the run folder for the block: made, locked (rank 0), checked, cleaned of stale temp files.
    A folder this call made that holds nothing but the lock when the block ends is removed again, so a
    run refused or failing before it writes anything leaves no trace."""
    path = Path(path)
    if not is_main:
        refusal = saved_run_refusal(path, resume)
        if refusal:
            raise GramcastError(refusal)
        yield
        return
    made = make_run_dir(path)
    lock = lock_run_dir(path)
    try:
        refusal = saved_run_refusal(path, resume)   # checked holding the lock: no other run is writing it
        if refusal:
            raise GramcastError(refusal)
        remove_stale_temps(path)
        yield
    finally:
        if made and [p.name for p in path.iterdir()] == [LOCK_FILE]:
            (path / LOCK_FILE).unlink(missing_ok=True)
            path.rmdir()
        lock.close()
