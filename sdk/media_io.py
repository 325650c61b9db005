"""Writing outputs atomically (temp file in the same folder, then rename): images, animations, any file."""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from gramcast.errors import OutputPathError


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def check_output_path(path: str | Path) -> None:
    """Raise ``OutputPathError`` unless a file can be created at ``path`` (call before slow work)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise OutputPathError(f"cannot write {path}: folder {path.parent} is read-only")


@contextmanager
def atomic_output(path: str | Path):
    """Yields a temp path beside ``path``; renames it over ``path`` only if the block succeeds. What the OS
    refuses (no such folder, no permission, a read-only file system, a protected file, a full disk) is an
    ``OutputPathError`` naming ``path``; nothing is left behind either way."""
    path = Path(path)
    check_output_path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets, not outputs
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno is None:      # a writer's own error (Pillow's "cannot write mode RGBA as JPEG"), not the OS's
            raise
        # the OS names the temp file beside ``path`` (or the rename): say it of the user's path instead
        raise _unwritable(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _unwritable(path: Path, exc: OSError) -> OutputPathError:
    """``exc``, raised writing ``path`` (or its temp file), as what the user can do about it."""
    folder = path.parent
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
    if suffix not in ANIMATION_SUFFIXES:
        raise OutputPathError(f"unsupported animation format {suffix!r}: use .gif, .mp4 or .webm")
    return suffix


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    from PIL import Image

    fmt = image_format(path)
    with atomic_output(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt)


def save_animation(path: str | Path, frames: list[np.ndarray], fps: float = 25.0) -> None:
    """GIF (Pillow) or MP4/WebM (PyAV), chosen by the file suffix."""
    suffix = animation_format(path)
    if not frames:
        raise ValueError("an animation needs at least one frame")
    if not fps > 0:
        raise ValueError(f"frames per second must be positive, got {fps}")
    with atomic_output(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=int(1000 / fps), loop=0)
        elif suffix in (".mp4", ".webm"):
            import av

            with av.open(str(tmp), "w", format=suffix.lstrip(".")) as out:
                stream = out.add_stream("libx264" if suffix == ".mp4" else "libvpx", rate=int(fps))
                h, w = frames[0].shape[:2]
                stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
                for f in frames:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]), format="rgb24")
                    out.mux(stream.encode(frame))
                out.mux(stream.encode())

