"""Loading user images robustly: whatever a selfie file is, we get RGB uint8 or a clear error.

Handles JPEG, PNG, WebP and the rest of Pillow's formats, and HEIC/HEIF (what an iPhone camera saves by
default; through ``pillow-heif``); EXIF orientation, grayscale, palette, CMYK, 16-bit and alpha images
(alpha is composited over white, as a viewer would show it); downscales huge images, and refuses
decompression bombs, truncated, empty or non-image files with an ``InvalidImageError`` that says what to do.
"""
from __future__ import annotations

import functools
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from gramcast.errors import InvalidImageError

#: Larger images are downscaled (longest side) on load: a face needs far fewer pixels.
MAX_SIDE = 4096
#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 200_000_000


# what load_image takes, for the message that refuses anything else
_ACCEPTED = ("a file path, the file's bytes, a binary file object (open(..., 'rb')), a PIL image, or an "
            "(H, W, 3) / (H, W, 4) / (H, W) uint8 array")

# Pillow's own decompression-bomb limit (MAX_IMAGE_PIXELS, a module global) is lifted while a header is read,
# so that our MAX_PIXELS rules and says so in gramcast's words; the lock keeps concurrent loads from
# restoring each other's lifted value.
_PILLOW_LIMIT_LOCK = threading.Lock()


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    name = getattr(src, "name", None)       # an open file names its path
    if isinstance(name, str):
        return name
    return f"<{type(src).__name__}>"


def _too_big(name: str, width: int, height: int) -> InvalidImageError:
    return InvalidImageError(f"{name} is {width}x{height} pixels, beyond the {MAX_PIXELS // 1_000_000} megapixel "
                             "limit: downscale it first")


def _open_header(data: bytes, name: str):
    """``Image.open`` (which reads only the header) with Pillow's pixel limit lifted, then ours applied."""
    from PIL import Image

    with _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    if img.width * img.height > MAX_PIXELS:
        raise _too_big(name, img.width, img.height)
    return img


def _read_bytes(src, name: str) -> bytes:
    """The encoded image in ``src`` (a path, bytes, or a binary file object), or an ``InvalidImageError``."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        try:
            return Path(src).read_bytes()
        except FileNotFoundError:
            raise InvalidImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InvalidImageError(f"{name} is a folder, not an image file") from None
        except OSError as exc:
            raise InvalidImageError(f"{name}: cannot read ({exc.strerror})") from None
    if callable(getattr(src, "read", None)):
        text_mode = InvalidImageError(f"{name} is open as text: open it with open(path, 'rb')")
        if isinstance(src, io.TextIOBase):
            raise text_mode
        try:
            data = src.read()
        except UnicodeDecodeError:      # a text-mode reader of a foreign class, fed an image's bytes
            raise text_mode from None
        except OSError as exc:
            raise InvalidImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
        if isinstance(data, str):
            raise text_mode
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidImageError(f"{name}: read() gave {type(data).__name__}, not bytes; pass {_ACCEPTED}")
        return bytes(data)
    what = "None" if src is None else f"a {type(src).__module__}.{type(src).__qualname__}"
    raise InvalidImageError(f"cannot load an image from {what}: pass {_ACCEPTED}")


@functools.cache
def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF files (once; a no-op where pillow-heif is not installed, which then
    leaves such files to the "not an image gramcast can read" error)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - pillow-heif is a dependency; a trimmed install may lack it
        return
    register_heif_opener()


def load_image(src, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode ``src`` to an ``(H, W, 3)`` uint8 RGB array.

    ``src``: a file path (str or ``os.PathLike``), the file's bytes, a binary file object (read to its end),
    a PIL image, or an array: ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (its alpha composited over white, as for
    a file), ``(H, W)`` or ``(H, W, 1)`` grey; uint8, uint16 or float in [0, 1]. Decoded files and PIL images
    are turned upright by their EXIF orientation and downscaled to ``max_side`` pixels a side; arrays are taken
    as they are. Anything else, and channel-first ``(3, H, W)`` arrays, are an ``InvalidImageError`` that
    says what to pass; so are images beyond ``MAX_PIXELS``, refused before their pixels are decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _register_heif()

    name = _describe(src)
    if isinstance(src, np.ndarray):
        return _from_array(src, name)
    if isinstance(src, Image.Image):
        img = src
    else:
        data = _read_bytes(src, name)
        if not data:
            raise InvalidImageError(f"{name} is empty: export the photo again as JPEG or PNG")
        try:
            with warnings.catch_warnings():
                # our own MAX_PIXELS guard replaces Pillow's decompression-bomb warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = _open_header(data, name)
                if img.format == "JPEG" and max(img.size) > max_side:
                    img.draft(img.mode, (max_side, max_side))   # decode at 1/2..1/8 scale: fast, small
                img.load()
        except InvalidImageError:
            raise
        except UnidentifiedImageError:
            raise InvalidImageError(f"{name} is not an image gramcast can read: use JPEG, PNG, WebP or HEIC") from None
        except Image.DecompressionBombError as exc:
            # a frame (GIF, ICO, ...) that Pillow checks while decoding, with its own limit back in place
            raise InvalidImageError(f"{name} is too large to decode safely ({exc}): downscale it first") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"{name} is damaged or truncated ({exc}): export the photo again") from None
    try:
        img = ImageOps.exif_transpose(img)  # phones store rotation as a tag, not in the pixels
    except Exception:  # a broken EXIF block must not lose an otherwise good photo
        pass
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _to_rgb(img, name)


def as_rgb(image, name: str = "the image") -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 RGB array: what the face code (``gramcast.face``) and its native graphs
    take, from anything ``load_image`` takes, converted as it converts it (an array as it is, not resized).
    An ``(H, W, 3)`` uint8 C-contiguous array is returned itself, uncopied: the head tracker passes every video
    frame through here. ``name``: what an array is called in the error that refuses it ("the frame")."""
    if (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.shape[0] > 0 and image.shape[1] > 0 and image.flags.c_contiguous):
        return image
    if isinstance(image, np.ndarray):
        return _from_array(image, name)
    return load_image(image)


def _to_rgb(img, name: str) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, CMYK, YCbCr, 1, F ...
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise InvalidImageError(f"{name}: unsupported image layout {arr.shape}")
    return np.ascontiguousarray(arr)


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        raise InvalidImageError(f"{name}: the array {arr.shape} is channels first (C, H, W); pass channels last, "
                                "e.g. arr.transpose(1, 2, 0)")
    if arr.ndim in (2, 3) and 0 in arr.shape[:2]:
        # an empty image has no face and no matte, and breaks the native graphs that are given one (mediapipe's
        # stops for good, OpenCV's aborts the process)
        raise InvalidImageError(f"{name} is empty ({arr.shape[0]}x{arr.shape[1]} pixels, shape {arr.shape}): "
                                "pass an image with pixels")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"{name}: an image array is (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, "
                                f"got {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise InvalidImageError(f"{name}: arrays are uint8, uint16 or float in [0, 1]; got {arr.dtype}")
        if not np.isfinite(arr).all():
            raise InvalidImageError(f"{name}: arrays are uint8, uint16 or float in [0, 1]; got {arr.dtype} with "
                                    "NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise InvalidImageError(f"{name}: arrays are uint8, uint16 or float in [0, 1]; got {arr.dtype} from "
                                    f"{arr.min()} to {arr.max()}: scale floats to [0, 1] or pass uint8")
        arr = (arr * 255.0 + 0.5).astype(np.uint8)
    if arr.shape[2] == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        arr = np.clip(arr[..., :3] * a + 255.0 * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
