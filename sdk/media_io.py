"""Writing outputs atomically (temp file in the same folder, then rename): images, animations, any file.

A name that already holds a pipe or a character device (a FIFO another program reads, a null device made to
discard the output) is written through directly, as Unix tools do: there is nothing there a rename could
replace without breaking it. A symbolic link's target is replaced, and the link kept.
"""
from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from gramcast.errors import InvalidArgumentError, OutputPathError


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def output_name_problem(name: str) -> str | None:
    """Why ``name``, as typed, cannot name an output file (None: it can). Asked of the text itself: pathlib
    drops a trailing separator, and would write ``anim.gif/`` as the file ``anim.gif``."""
    if name == "-":
        return "writing to stdout ('-') is not supported; give a file name"
    if name.endswith(("/", os.sep)):
        return f"a name ending in {name[-1]!r} names a folder; give a file name"
    return None


def _kind(path: Path) -> str:
    """What ``path`` holds, through symbolic links: missing, file, folder, stream (a FIFO or a character
    device: written through), or another kind of thing, named."""
    try:
        mode = os.stat(path).st_mode
    except OSError:           # nothing there (a dangling link too), or a file where a folder should be
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return "stream"
    return "socket" if stat.S_ISSOCK(mode) else "block device" if stat.S_ISBLK(mode) else "special file"


def _target(path: Path) -> Path:
    """Where a write to ``path`` lands: a symbolic link's target, so that the link survives the rename."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_output_path(path: str | Path) -> None:
    """Raise ``OutputPathError`` unless a file can be written at ``path`` (call before slow work). The folder
    is asked by making a file in it: root passes ``access()`` where a file system refuses (/proc, /sys)."""
    name = os.fspath(path)
    problem = output_name_problem(name) if isinstance(name, str) else None
    if problem:
        raise OutputPathError(f"cannot write {name}: {problem}")
    path = Path(path)
    kind = _kind(path)
    if kind == "folder":
        raise OutputPathError(f"cannot write {path}: it is a folder; give a file name")
    if kind == "stream":
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"cannot write {path}: it is not writable for you; save elsewhere")
        return
    if kind not in ("missing", "file"):
        raise OutputPathError(f"cannot write {path}: it is a {kind}, not a file; give another name")
    target = _target(path)
    _check_folder(path, target.parent)
    _try_a_file_beside(path, target)


def _check_folder(path: Path, folder: Path) -> None:
    if not folder.is_dir():
        blocker = next((p for p in folder.parents if p.exists()), None) if not folder.exists() else folder
        if blocker is not None and not blocker.is_dir():
            raise OutputPathError(f"cannot write {path}: {blocker} is a file, not a folder")
        raise OutputPathError(f"cannot write {path}: folder {folder} does not exist; make it first")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"cannot write {path}: folder {folder} is read-only; save elsewhere")


def _try_a_file_beside(path: Path, target: Path) -> None:
    """Makes and removes the temp file ``atomic_output`` would make for ``target``: the OS's answer now, not
    after the work."""
    try:
        fd, probe = _temp_file_beside(target)
    except OSError as exc:
        raise _unwritable(path, exc, target.parent) from None
    os.close(fd)
    os.unlink(probe)


def _temp_file_beside(target: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)


@contextmanager
def atomic_output(path: str | Path):
    """Yields a temp path beside ``path``; renames it over ``path`` only if the block succeeds. What the OS
    refuses (no such folder, no permission, a read-only file system, a protected file, a full disk) is an
    ``OutputPathError`` naming ``path``; nothing is left behind either way. A pipe or character device at
    ``path`` is yielded itself (written through); a symbolic link's target is what is replaced; a file that
    is replaced keeps its permissions."""
    check_output_path(path)       # before Path(), which drops a trailing separator
    path = Path(path)
    if _kind(path) == "stream":
        with _refusals_named(path, path.parent):
            yield path
        return
    target = _target(path)
    tmp = None
    try:
        with _refusals_named(path, target.parent):
            fd, tmp = _temp_file_beside(target)
            os.close(fd)
            yield Path(tmp)
            os.chmod(tmp, _mode_for(target))
            os.replace(tmp, target)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _refusals_named(path: Path, folder: Path):
    """The OS's refusals within the block as an ``OutputPathError`` said of the user's ``path``: the OS names
    the temp file beside it, or the rename."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:      # a writer's own error (Pillow's "cannot write mode RGBA as JPEG"), not the OS's
            raise
        raise _unwritable(path, exc, folder) from None


def _mode_for(target: Path) -> int:
    """The permissions the written file gets: those of the file it replaces, else the umask's (mkstemp's
    0600 is for secrets, not outputs)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _unwritable(path: Path, exc: OSError, folder: Path | None = None) -> OutputPathError:
    """``exc``, raised writing ``path`` (or its temp file in ``folder``), as what the user can do about it."""
    folder = path.parent if folder is None else folder
    if exc.errno == errno.ENOENT:
        why = (f"folder {folder} does not exist; make it first" if not folder.is_dir() else
               f"folder {folder} takes no new files ({exc.strerror}); save elsewhere")
    elif exc.errno == errno.EROFS:
        why = f"{folder} is on a read-only file system; save elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM) and path.exists():
        why = (f"the file there cannot be replaced ({exc.strerror}: it is protected, e.g. immutable, or not "
               "yours); save under another name or elsewhere")
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = f"folder {folder} is not writable ({exc.strerror}); save elsewhere"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"no space left on the disk of {folder}; free some or save elsewhere"
    else:
        why = f"{exc.strerror or exc}; save elsewhere"
    return OutputPathError(f"cannot write {path}: {why}")


#: Animation containers ``save_animation`` writes.
ANIMATION_SUFFIXES = (".gif", ".mp4", ".webm")
#: A GIF's frame delays are whole hundredths of a second, and browsers play delays under 2 as 10: faster
#: than 50 fps is not a GIF. The slowest keeps a delay (100 s) well inside its 16 bits (655 s).
GIF_FPS = (0.01, 50.0)
_VIDEO_CODECS = {".mp4": "libx264", ".webm": "libvpx"}


def image_format(path: str | Path) -> str:
    """Pillow's format name for ``path``'s suffix (none: PNG), or ``OutputPathError`` (call before slow work)."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise OutputPathError(f"unsupported image format {suffix!r} for {path}: use .png, .jpg or .webp")
    return fmt


def animation_format(path: str | Path) -> str:
    """``path``'s animation suffix, or ``OutputPathError`` (call before rendering the frames)."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        raise OutputPathError(f"cannot tell which animation format to write to {path}: give a name ending in "
                              ".gif, .mp4 or .webm")
    if suffix not in ANIMATION_SUFFIXES:
        raise OutputPathError(f"unsupported animation format {suffix!r}: use .gif, .mp4 or .webm")
    return suffix


def check_animation(path: str | Path, fps: float, size: tuple[int, int] | None = None) -> str:
    """``path``'s animation suffix, or why ``path`` cannot hold frames of ``size`` (width, height) at ``fps``:
    ``OutputPathError`` / ``InvalidArgumentError`` (call before rendering the frames)."""
    suffix = animation_format(path)
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidArgumentError(f"frames per second must be a positive number, got {fps}")
    if suffix == ".gif" and not GIF_FPS[0] <= fps <= GIF_FPS[1]:
        raise InvalidArgumentError(f"a GIF plays {GIF_FPS[0]:g} to {GIF_FPS[1]:g} frames per second, not {fps:g} "
                                   "(its delays are whole hundredths of a second; browsers slow shorter ones "
                                   "down): use a rate in that range, or write .mp4 or .webm")
    if suffix != ".gif" and size is not None and (size[0] % 2 or size[1] % 2):
        raise InvalidArgumentError(f"{suffix} video needs an even width and height (4:2:0 colour), not "
                                   f"{size[0]}x{size[1]}: give an even size, e.g. {size[0] + size[0] % 2}")
    return suffix


def frame_rate(fps: float) -> Fraction:
    """``fps`` as the exact rational a container stores (29.97 -> 2997/100, 30000/1001 stays so)."""
    return Fraction(fps).limit_denominator(1001)


def gif_delay(index: int, rate: Fraction) -> int:
    """Frame ``index``'s delay in hundredths of a second: each frame's end rounded to the nearest hundredth,
    so that delays of 4 and 5 alternate at 24 fps and the whole lasts frames / fps (within 5 ms)."""
    def end(i: int) -> int:
        return math.floor(Fraction(100 * i) / rate + Fraction(1, 2))

    return end(index + 1) - end(index)


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    from PIL import Image

    fmt = image_format(path)
    with atomic_output(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt)


def save_animation(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0) -> int:
    """GIF (Pillow) or MP4/WebM (PyAV), chosen by the file suffix; ``frames`` (H, W, 3) uint8, which may come
    from a generator: each is encoded as it arrives, none is kept. Returns the number of frames written."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise InvalidArgumentError("an animation needs at least one frame")
    suffix = check_animation(path, fps, (first.shape[1], first.shape[0]))
    rate = frame_rate(fps)
    with atomic_output(path) as tmp:
        seekable = os.path.isfile(tmp)
        if suffix == ".gif":
            with open(tmp, "wb") as file:
                return _write_gif(file, _same_shape(first, frames), rate)
        return _write_video(tmp, suffix, _same_shape(first, frames), rate, seekable)


def _same_shape(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    for i, frame in enumerate(rest, 1):
        if frame.shape != first.shape:
            raise InvalidArgumentError(f"frame {i} is {frame.shape}, the first was {first.shape}: every frame "
                                       "of an animation has the same size")
        yield frame


def _write_gif(file, frames: Iterator[np.ndarray], rate: Fraction) -> int:
    """Frame by frame (Pillow's multi-frame save keeps every frame until the end): each frame only where it
    differs from the one before, drawn over it, with a palette of its own."""
    from PIL import GifImagePlugin, Image

    previous, count = None, 0
    for frame in frames:
        x0, y0, x1, y1 = _changed_box(previous, frame)
        im = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1])).convert("P", palette=Image.Palette.ADAPTIVE)
        delay = 10 * gif_delay(count, rate)          # Pillow takes milliseconds and stores hundredths
        if previous is None:
            header, _ = GifImagePlugin.getheader(im, None, {"loop": 0, "duration": delay})
            file.write(b"".join(header))
        for chunk in GifImagePlugin.getdata(im, (x0, y0), duration=delay, include_color_table=previous is not None):
            file.write(chunk)
        previous, count = frame, count + 1
    file.write(b";")
    return count


def _changed_box(previous: np.ndarray | None, frame: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the pixels of ``frame`` that differ from ``previous`` (all of it: the first;
    one pixel where none differ, which a GIF frame needs at least)."""
    if previous is None:
        return 0, 0, frame.shape[1], frame.shape[0]
    changed = frame != previous
    changed = changed.any(axis=-1) if changed.ndim == 3 else changed
    if not changed.any():
        return 0, 0, 1, 1
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _write_video(path: Path, suffix: str, frames: Iterator[np.ndarray], rate: Fraction, seekable: bool) -> int:
    import av

    # MP4 puts its index after the frames and seeks back to link it; into a pipe, fragments need no seeking
    options = {} if seekable or suffix != ".mp4" else {"movflags": "frag_keyframe+empty_moov"}
    count = 0
    with av.open(str(path), "w", format=suffix.lstrip("."), options=options) as out:
        stream = out.add_stream(_VIDEO_CODECS[suffix], rate=rate)
        for frame in frames:
            if count == 0:
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            count += 1
        out.mux(stream.encode())
    return count
